"""A `spinbot worker` checks a job's portrait in the sandbox before its task decodes it (spinbot.tasks.user_files):
a decompression bomb that reached storage without the upload check fails its node with one line, and the worker,
whose own memory never held the bomb, runs the next node."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from spinbot.control.dispatch import TaskRequest
from spinbot.media.audio import load_audio, write_wav
from spinbot.queue.config import QueueOptions
from spinbot.queue.dispatcher import QueueDispatcher
from spinbot.queue.errors import WorkerTaskError
from spinbot.samples import portrait_path, voice_path
from spinbot.storage.local import LocalStore
from spinbot.worker.heartbeat import list_workers
from tests.support.hostile_media import BOMB_LIMITS, BOMB_REFUSED, png_bomb

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
QUEUE = "input-check"
# A lite render's worker peaks near 270 MiB (measured); one that decoded the bomb itself, 930 MiB.
PEAK_RSS_MIB = 600


def peak_rss_mib(pid: int) -> float:
    """The process's own peak resident memory since it started (its ru_maxrss, which the nodes' meta report, also
    counts what its parent, this test process, held as it was spawned)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("input-check-store")


@pytest.fixture(scope="module")
def worker(redis_url: str, store_dir: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
    env |= {f"SPINBOT_{name.upper()}": str(value) for name, value in BOMB_LIMITS.items()}
    env |= {
        "SPINBOT_REDIS_URL": redis_url,
        "SPINBOT_STORAGE_URL": f"file://{store_dir}",
        "SPINBOT_DATA_DIR": str(store_dir.parent / "worker-data"),
        "SPINBOT_TALK_MAX_PIXELS": str(128 * 128),
        "SPINBOT_WORKER_HEARTBEAT_SECONDS": "0.5",
    }
    with open(store_dir.parent / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spinbot", "worker", "--queues", QUEUE], cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        deadline = time.monotonic() + 60
        while not any(w.pid == proc.pid for w in list_workers(client)):
            assert proc.poll() is None and time.monotonic() < deadline, (store_dir.parent / "worker.log").read_text()
            time.sleep(0.1)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def dispatcher(redis_url: str):
    dispatcher = QueueDispatcher(QueueOptions(redis_url=redis_url, routes={"infinite_talk": QUEUE}))
    yield dispatcher
    dispatcher.close()


def talk_request(store: LocalStore, portrait: Path, tmp_path: Path) -> TaskRequest:
    job_id = uuid.uuid4().hex
    audio, sr = load_audio(voice_path())
    speech = write_wav(tmp_path / "speech.wav", audio[: int(1.5 * sr)], sr)
    keys = {"source_image": f"uploads/owner/{job_id}/portrait.png", "audio": f"jobs/{job_id}/f5_to_tts/speech.wav"}
    store.upload(portrait, keys["source_image"])
    store.upload(speech, keys["audio"])
    params = {"fps": 10, "frame_window_size": 9, "motion_frame": 1}
    return TaskRequest(job_id=job_id, node_id="infinite_talk", task="infinite_talk", params=params, artifacts=keys)


def test_a_portrait_bomb_fails_its_node_in_one_line_and_the_worker_runs_the_next(
    worker, dispatcher, store_dir, tmp_path
):
    store, bomb = LocalStore(store_dir), png_bomb(tmp_path / "bomb.png")
    with pytest.raises(WorkerTaskError) as refused:
        dispatcher.run(talk_request(store, bomb, tmp_path), lambda f, m: None, lambda: False)
    assert str(refused.value) == BOMB_REFUSED
    assert worker.poll() is None

    output = dispatcher.run(talk_request(store, portrait_path(tmp_path), tmp_path), lambda f, m: None, lambda: False)
    assert store.exists(output.artifacts["video"])
    assert worker.poll() is None
    assert peak_rss_mib(worker.pid) < PEAK_RSS_MIB  # over both nodes
