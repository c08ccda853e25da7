"""infinite_talk continues from its last finished window (spinbot.tasks.talk_resume): a render that failed at a
window, run again, renders only the windows after the last finished one and gives the same video as a render that
never stopped.

(Past 400 lines: one subject, the window checkpoints, through the task, the job runner, concurrent runs and
cleanup; the tests share the renders fixture and the talk inputs.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest

from spinbot.backends.talk.animator import AnimatorBackend
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.media.video import iter_frames, probe
from spinbot.samples import portrait_path, voice_path
from spinbot.storage.base import ArtifactStore
from spinbot.storage.local import LocalStore
from spinbot.tasks.base import NodeOutput
from tests.support import services
from tests.support.renders import watch_renders
from tests.support.tasks import write_beckett_excerpt

PARAMS = {"fps": 10, "frame_window_size": 6, "motion_frame": 1}  # 2.2 s of speech: 5 windows
PREFIX = "jobs/job1/infinite_talk/resume/"


class Interrupted(RuntimeError):
    pass


@pytest.fixture(scope="module")
def talk_inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    return portrait_path(folder), write_beckett_excerpt(folder / "speech.wav")


@pytest.fixture
def renders(monkeypatch, use_settings) -> dict:
    """The lite backend's render_window, recording each window it is asked for, and failing once at
    renders["fail_at"] (a window index) when that is set."""
    use_settings(talk_max_pixels=128 * 128, talk_backend="lite")
    return watch_renders(monkeypatch, AnimatorBackend, Interrupted)


def talk(store: ArtifactStore, inputs: tuple[Path, Path], workdir: Path, report=None, **params) -> NodeOutput:
    keys = {}
    for name, path in zip(("source_image", "audio"), inputs):
        keys[name] = f"inputs/{path.name}"
        if not store.exists(keys[name]):
            store.upload(path, keys[name])
    request = TaskRequest(job_id="job1", node_id="infinite_talk", task="infinite_talk", params=params, artifacts=keys)
    workdir.mkdir(parents=True, exist_ok=True)
    return execute_task(request, store, report or (lambda f, m: None), workdir_root=workdir)


def video_of(store: ArtifactStore, out: NodeOutput, dest: Path) -> Path:
    store.download(out.artifacts["video"], dest)
    return dest


def video_packets(path: Path) -> list[tuple[bytes, int | None, int | None]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(bytes(p), p.pts, p.dts) for p in container.demux(stream) if p.size]


def interrupted(store: ArtifactStore, inputs, tmp_path: Path, renders: dict, at: int, **params) -> None:
    renders["fail_at"] = at
    with pytest.raises(Interrupted):
        talk(store, inputs, tmp_path / "first", **(PARAMS | params))
    assert renders["calls"] == list(range(at + 1))
    renders["calls"].clear()


def test_a_rerun_renders_only_the_windows_after_the_last_finished_one(tmp_path, talk_inputs, renders):
    store = LocalStore(tmp_path / "store")
    interrupted(store, talk_inputs, tmp_path, renders, at=2)
    manifest = json.loads(store.get_bytes(PREFIX + "manifest.json"))
    assert manifest["done"] == 2 and manifest["windows"] == 5
    assert sorted(store.list(PREFIX)) == [
        PREFIX + "chunk-00000.mp4",
        PREFIX + "chunk-00001.mp4",
        PREFIX + "manifest.json",
        PREFIX + "owner.json",
        PREFIX + "state-00001/backend.bin",
    ]

    said: list[tuple[float, str]] = []
    resumed = talk(store, talk_inputs, tmp_path / "second", lambda f, m: said.append((f, m)), **PARAMS)
    assert renders["calls"] == [2, 3, 4]
    assert resumed.meta["resumed_from_window"] == 2
    assert resumed.meta["steps"][5] == {"step": "generate", "backend": "lite", "windows": 3}
    resuming = next((f, m) for f, m in said if m.startswith("resuming"))
    assert resuming == (pytest.approx(0.05 + 0.9 * 2 / 5), "resuming at window 3/5")
    assert min(f for f, _ in said[said.index(resuming) :]) >= resuming[0]
    assert store.list(PREFIX) == []  # the node succeeded: its checkpoint is gone

    renders["calls"].clear()
    whole_store = LocalStore(tmp_path / "whole")
    whole = talk(whole_store, talk_inputs, tmp_path / "whole-work", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4] and whole.meta["resumed_from_window"] is None
    video = video_of(store, resumed, tmp_path / "resumed.mp4")
    reference = video_of(whole_store, whole, tmp_path / "whole.mp4")
    frames, expected = list(iter_frames(video)), list(iter_frames(reference))
    count = resumed.meta["steps"][6]["frames"]
    assert len(frames) == len(expected) == count == probe(video).frames
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected))
    assert video_packets(video) == video_packets(reference)  # the kept windows were not encoded again
    info = probe(video)
    assert info.audio_rate == 48000 and info.audio_duration == pytest.approx(count / 10, abs=1024 / 48000 + 1e-6)


def test_a_changed_param_ignores_the_checkpoint(tmp_path, talk_inputs, renders, caplog):
    store = LocalStore(tmp_path / "store")
    interrupted(store, talk_inputs, tmp_path, renders, at=3)
    with caplog.at_level(logging.WARNING, logger="spinbot.tasks.talk_resume"):
        out = talk(store, talk_inputs, tmp_path / "second", **(PARAMS | {"audio_scale": 1.0}))
    assert renders["calls"] == [0, 1, 2, 3, 4]
    assert out.meta["resumed_from_window"] is None
    assert "other params" in out.meta["checkpoint_ignored"]
    (record,) = [r for r in caplog.records if r.getMessage() == "infinite_talk checkpoint ignored and removed"]
    assert (record.job_id, record.node_id) == ("job1", "infinite_talk") and "other params" in record.reason
    assert store.list(PREFIX) == []


@pytest.mark.parametrize("damage", ["manifest", "chunk", "truncated chunk", "missing chunk", "state"])
def test_a_damaged_checkpoint_is_ignored_with_a_log_line(tmp_path, talk_inputs, renders, caplog, damage):
    store = LocalStore(tmp_path / "store")
    interrupted(store, talk_inputs, tmp_path, renders, at=3)
    if damage == "manifest":
        store.put_bytes(PREFIX + "manifest.json", b'{"format": 1, "done": ')
    elif damage == "chunk":
        data = bytearray(store.get_bytes(PREFIX + "chunk-00001.mp4"))
        data[len(data) // 2] ^= 0xFF
        store.put_bytes(PREFIX + "chunk-00001.mp4", bytes(data))
    elif damage == "truncated chunk":  # a copy to another store that stopped halfway
        data = store.get_bytes(PREFIX + "chunk-00002.mp4")
        store.put_bytes(PREFIX + "chunk-00002.mp4", data[: len(data) // 2])
    elif damage == "missing chunk":
        store.path(PREFIX + "chunk-00002.mp4").unlink()
    else:
        store.put_bytes(PREFIX + "state-00002/backend.bin", b"not the lite backend's state")
    with caplog.at_level(logging.WARNING, logger="spinbot.tasks.talk_resume"):
        out = talk(store, talk_inputs, tmp_path / "second", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4]
    assert out.meta["resumed_from_window"] is None and out.meta["checkpoint_ignored"]
    assert "ignored and removed" in caplog.text
    assert store.list(PREFIX) == []
    assert probe(video_of(store, out, tmp_path / "out.mp4")).frames == out.meta["steps"][6]["frames"]


def test_a_checkpoint_in_s3_lets_another_process_continue(tmp_path, talk_inputs, renders, monkeypatch):
    from spinbot.storage.s3 import S3Store

    with services.moto_s3() as endpoint:
        for name, value in services.TEST_AWS_ENV.items():
            monkeypatch.setenv(name, value)
        store = S3Store("spinbot-resume", endpoint_url=endpoint)
        store.ensure_bucket()
        interrupted(store, talk_inputs, tmp_path, renders, at=1)
        assert PREFIX + "chunk-00000.mp4" in store.list(PREFIX)
        other = S3Store("spinbot-resume", endpoint_url=endpoint)  # another worker, the same bucket
        out = talk(other, talk_inputs, tmp_path / "second", **PARAMS)
        assert renders["calls"] == [1, 2, 3, 4] and out.meta["resumed_from_window"] == 1
        assert store.list(PREFIX) == []
        video = video_of(store, out, tmp_path / "out.mp4")
        assert len(list(iter_frames(video))) == probe(video).frames == out.meta["steps"][6]["frames"]


# ---- through the job runner ----------------------------------------------------------------------------------------


def seed_job(runner, tmp_path: Path) -> str:
    """A job of the seed pipeline with a multi-window infinite_talk."""
    from spinbot.control.requests import JobRequest

    return runner.create_job(
        JobRequest(
            prompt="resume",
            image=portrait_path(tmp_path),
            voice=voice_path(),
            ref_text="x",
            params={
                "script": {"text": "Ever tried. Ever failed."},
                "infinite_talk": {"fps": 10, "frame_window_size": 4, "motion_frame": 1},
            },
        )
    )


@pytest.fixture
def failing_job(tmp_path: Path, spinbot_env, renders):
    """A job of the seed pipeline (in-process runner) whose infinite_talk failed at its third window."""
    from spinbot.control.runner import Runner

    runner = Runner()
    job_id = seed_job(runner, tmp_path)
    renders["fail_at"] = 2
    failed = runner.run(job_id)
    assert failed.status == "failed" and "stopped at window 2" in (failed.error or "")
    assert renders["calls"] == [0, 1, 2]
    renders["calls"].clear()
    checkpoint = spinbot_env / "jobs" / job_id / "infinite_talk" / "resume"
    assert (checkpoint / "manifest.json").is_file()
    return runner, job_id, checkpoint


def test_a_retried_job_renders_only_the_rest_of_its_windows(failing_job, renders):
    runner, job_id, checkpoint = failing_job
    assert runner.reopen(job_id)  # POST /v1/jobs/{id}/retry, spinbot run --resume
    done = runner.run(job_id)
    assert done.status == "succeeded", done.error
    windows = done.node("infinite_talk").output["meta"]["windows"]["count"]
    assert windows >= 4 and renders["calls"] == list(range(2, windows))
    assert done.node("infinite_talk").output["meta"]["resumed_from_window"] == 2
    assert done.node("infinite_talk").attempts == 2 and done.node("f5_to_tts").attempts == 1
    assert not checkpoint.exists()


def test_deleting_a_failed_job_removes_its_window_checkpoint(failing_job):
    runner, job_id, checkpoint = failing_job
    runner.delete_job(job_id)
    assert not checkpoint.exists()


def test_a_checkpoint_with_every_window_done_is_joined_without_a_restore(tmp_path, talk_inputs, renders, monkeypatch):
    """The render failed after its last window (the join, the upload): the next attempt joins the stored chunks.
    The backend's state is not restored then (there is none: b""), as the native backend refuses empty bytes."""
    from spinbot.tasks import talk as talk_module

    store = LocalStore(tmp_path / "store")
    real_join = talk_module.join_chunks

    def failing_join(*args, **kwargs):
        monkeypatch.setattr(talk_module, "join_chunks", real_join)
        raise Interrupted("the join failed")

    monkeypatch.setattr(talk_module, "join_chunks", failing_join)
    with pytest.raises(Interrupted):
        talk(store, talk_inputs, tmp_path / "first", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4]
    manifest = json.loads(store.get_bytes(PREFIX + "manifest.json"))
    assert manifest["done"] == 5 and manifest["state"] is None
    renders["calls"].clear()

    def native_like_restore(self, state, data):  # continuation.restore: torch.load of b"" is "not a native checkpoint"
        raise ValueError("not a native checkpoint: empty")

    monkeypatch.setattr(AnimatorBackend, "restore", native_like_restore)
    out = talk(store, talk_inputs, tmp_path / "second", **PARAMS)
    assert renders["calls"] == []
    assert out.meta["resumed_from_window"] == 5 and "checkpoint_ignored" not in out.meta
    assert probe(video_of(store, out, tmp_path / "out.mp4")).frames == out.meta["steps"][6]["frames"]
    assert store.list(PREFIX) == []


def test_chunks_that_cannot_be_joined_are_removed_so_a_retry_renders_anew(tmp_path, talk_inputs, renders, monkeypatch):
    """Chunks encoded with other settings (another worker's x264) cannot be joined: kept, every retry failed alike."""
    from spinbot.media.chunks import ChunkMismatch
    from spinbot.tasks import talk as talk_module

    store = LocalStore(tmp_path / "store")

    def mismatched(*args, **kwargs):
        raise ChunkMismatch("chunk-00003.mp4 was encoded with other settings than the first chunk")

    real_join = talk_module.join_chunks
    monkeypatch.setattr(talk_module, "join_chunks", mismatched)
    with pytest.raises(ChunkMismatch):
        talk(store, talk_inputs, tmp_path / "first", **PARAMS)
    assert store.list(PREFIX) == []
    monkeypatch.setattr(talk_module, "join_chunks", real_join)
    renders["calls"].clear()
    out = talk(store, talk_inputs, tmp_path / "second", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4] and out.meta["resumed_from_window"] is None


def test_other_backend_numerics_start_afresh_with_a_log_line(tmp_path, talk_inputs, renders, caplog, monkeypatch):
    """Windows rendered under other numerics (the native backend's SPINBOT_TALK_ATTENTION, FP8, dtypes, model
    files: TalkBackend.numerics) would not join the new ones: the checkpoint is not continued, and the output says
    why."""
    numerics = {"attention": "sdpa", "fp8": False}
    monkeypatch.setattr(AnimatorBackend, "numerics", lambda self, state: dict(numerics), raising=False)
    store = LocalStore(tmp_path / "store")
    interrupted(store, talk_inputs, tmp_path, renders, at=3)
    assert json.loads(store.get_bytes(PREFIX + "manifest.json"))["numerics"] == numerics

    numerics["attention"] = "int8"  # another worker, or the same after a settings change
    with caplog.at_level(logging.WARNING, logger="spinbot.tasks.talk_resume"):
        out = talk(store, talk_inputs, tmp_path / "second", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4]
    assert out.meta["resumed_from_window"] is None
    assert out.meta["checkpoint_ignored"] == "made with other backend numerics (changed: attention)"
    (record,) = [r for r in caplog.records if r.getMessage() == "infinite_talk checkpoint ignored and removed"]
    assert record.reason == out.meta["checkpoint_ignored"] and record.job_id == "job1"
    assert store.list(PREFIX) == []
    assert probe(video_of(store, out, tmp_path / "out.mp4")).frames == out.meta["steps"][6]["frames"]


# ---- two runs of one node at once ----------------------------------------------------------------------------------


def stall_at(monkeypatch, at: int, meanwhile) -> dict:
    """The first render of window `at` stalls (a GPU stall past the lease): `meanwhile()` runs there (another
    process's run of the node), then the stalled window goes on with other frames than a fresh render's (another
    GPU's numbers: its chunk would differ from the newer run's). Returns {"stalled": bool}."""
    seen = {"stalled": False}
    real = AnimatorBackend.render_window  # the renders fixture's watcher

    def render_window(self, state, window):
        if window.index != at or seen["stalled"]:
            yield from real(self, state, window)
            return
        seen["stalled"] = True
        meanwhile()
        for frame in real(self, state, window):
            yield 255 - frame

    monkeypatch.setattr(AnimatorBackend, "render_window", render_window)
    return seen


def test_a_run_taken_over_mid_window_writes_nothing_into_the_newer_runs_checkpoint(
    tmp_path, talk_inputs, renders, monkeypatch
):
    """Run A stalls in window 2; run B takes the node over, resumes at window 2 and stops at window 4 (its worker
    died too). A wakes up: it must not write its window 2 over B's checkpoint (Superseded). A third run continues
    B's checkpoint at window 4, and its video is the frames of a render that never stopped."""
    from spinbot.tasks.base import Superseded

    store = LocalStore(tmp_path / "store")

    def run_b() -> None:
        renders["fail_at"] = 4
        with pytest.raises(Interrupted):
            talk(LocalStore(tmp_path / "store"), talk_inputs, tmp_path / "b", **PARAMS)

    stall_at(monkeypatch, 2, run_b)
    with pytest.raises(Superseded, match="another run took it over"):
        talk(store, talk_inputs, tmp_path / "a", **PARAMS)
    assert renders["calls"] == [0, 1, 2, 3, 4, 2]  # A: 0, 1; B (in A's stall): 2, 3, 4 (failed); A's window 2
    assert json.loads(store.get_bytes(PREFIX + "manifest.json"))["done"] == 4  # B's, untouched

    renders["calls"].clear()
    out = talk(store, talk_inputs, tmp_path / "c", **PARAMS)
    assert renders["calls"] == [4] and out.meta["resumed_from_window"] == 4
    renders["calls"].clear()
    whole_store = LocalStore(tmp_path / "whole")
    whole = talk(whole_store, talk_inputs, tmp_path / "whole-work", **PARAMS)
    frames = list(iter_frames(video_of(store, out, tmp_path / "out.mp4")))
    expected = list(iter_frames(video_of(whole_store, whole, tmp_path / "whole.mp4")))
    assert len(frames) == len(expected) and all(np.array_equal(a, b) for a, b in zip(frames, expected))
    assert store.list(PREFIX) == []


def test_a_run_that_wakes_after_the_newer_run_succeeded_leaves_no_checkpoint(
    tmp_path, talk_inputs, renders, monkeypatch
):
    from spinbot.tasks.base import Superseded

    store = LocalStore(tmp_path / "store")
    done: list[NodeOutput] = []
    stall_at(monkeypatch, 3, lambda: done.append(talk(store, talk_inputs, tmp_path / "b", **PARAMS)))
    with pytest.raises(Superseded):
        talk(store, talk_inputs, tmp_path / "a", **PARAMS)
    assert done[0].meta["resumed_from_window"] == 3
    assert store.list(PREFIX) == []  # B cleared it as it succeeded; A wrote nothing after


def test_a_superseded_run_records_nothing_for_its_job(tmp_path, spinbot_env, renders, monkeypatch):
    """The process whose task found its node taken over (Superseded) no longer drives the job: the job and the node
    are not recorded failed over it (the other process records them)."""
    from spinbot.control.runner import Runner
    from spinbot.tasks.base import Superseded

    def taken_over(self, state, window):
        raise Superseded("node 'infinite_talk' of job x: another run took it over")

    monkeypatch.setattr(AnimatorBackend, "render_window", taken_over)
    runner = Runner()
    job = runner.run(seed_job(runner, tmp_path))
    assert job.status == "running" and job.error is None
    assert job.node("infinite_talk").status == "running" and job.node("infinite_talk").error is None


# ---- checkpoints of jobs that will never run again -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["while it renders", "while interrupted"])
def test_a_cancelled_job_leaves_no_window_checkpoint(tmp_path, spinbot_env, renders, monkeypatch, how):
    """A cancelled job cannot be retried: the windows it kept would stay in the store until the job is deleted."""
    from spinbot.control.runner import Runner

    runner = Runner()
    job_id = seed_job(runner, tmp_path)
    checkpoint = spinbot_env / "jobs" / job_id / "infinite_talk" / "resume"
    real = AnimatorBackend.render_window

    def stopped_at_window_2(self, state, window):
        if window.index == 2:
            assert (checkpoint / "manifest.json").is_file()  # windows 0 and 1 are kept
            if how == "while it renders":
                runner.jobs.request_cancel(job_id)  # POST /v1/jobs/{id}/cancel: seen at the next progress report
            else:
                raise KeyboardInterrupt  # Ctrl-C in `spinbot run`: the job is interrupted, resumable
        return real(self, state, window)

    monkeypatch.setattr(AnimatorBackend, "render_window", stopped_at_window_2)
    if how == "while it renders":
        assert runner.run(job_id).status == "cancelled"
    else:
        with pytest.raises(KeyboardInterrupt):
            runner.run(job_id)
        assert (checkpoint / "manifest.json").is_file()  # kept for `spinbot run --resume`
        runner.cancel(job_id)
        assert runner.jobs.get(job_id).status == "cancelled"
    assert not checkpoint.exists()


def test_spinbot_gc_removes_checkpoints_left_behind_by_finished_jobs(tmp_path, spinbot_env, renders):
    """A superseded run that wrote in the moment before it saw its claim gone, after the node succeeded: gc's
    sweep removes what it left, and only that."""
    from typer.testing import CliRunner

    from spinbot.cli import app
    from spinbot.control.runner import Runner

    runner = Runner()
    done_id, failed_id = seed_job(runner, tmp_path), seed_job(runner, tmp_path)
    assert runner.run(done_id).status == "succeeded"
    renders["fail_at"] = 1
    assert runner.run(failed_id).status == "failed"
    late = f"jobs/{done_id}/infinite_talk/resume/chunk-00003.mp4"
    runner.artifacts.put_bytes(late, b"a late window")
    kept = f"jobs/{failed_id}/infinite_talk/resume/manifest.json"
    assert runner.artifacts.exists(kept)  # a failed job's checkpoint: its retry continues from it

    result = CliRunner().invoke(app, ["gc", "--older-than", "1000"])
    assert result.exit_code == 0, result.output
    assert not runner.artifacts.exists(late) and runner.artifacts.exists(kept)
    assert runner.artifacts.exists(runner.final_artifact(runner.jobs.get(done_id)) or "")
