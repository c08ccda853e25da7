"""The distributed pipeline end to end: API + two workers + Redis + PostgreSQL + an S3 server, all real processes.

The test starts its own Redis server (so it may restart it), its own PostgreSQL database and a moto S3 server;
the API and the workers are `spinbot serve` and `spinbot worker` subprocesses.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import boto3
import httpx
import psycopg
import pytest
import redis

from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore
from spinbot.worker.heartbeat import list_workers
from tests.support import services

KEY_A, KEY_B = "it-key-a", "it-key-b"
BUCKET = "spinbot-it"
PIPELINE_NODES = ["script", "f5_to_tts", "infinite_talk", "upscale_video"]
LONG_SCRIPT = " ".join(["Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."] * 5)
FINAL = ("succeeded", "failed", "cancelled")


class Stack:
    """The processes of one SpinBot deployment on loopback, and ways to break them."""

    def __init__(self, tmp: Path, s3_endpoint: str):
        self.tmp = tmp
        self.redis_port, self.api_port = services.free_port(), services.free_port()
        self.pg_db = f"spinbot_it_{uuid.uuid4().hex[:8]}"
        self.database_url = f"postgresql://postgres@127.0.0.1:5432/{self.pg_db}"
        self.env = {
            **os.environ,
            **services.TEST_AWS_ENV,
            "SPINBOT_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SPINBOT_DATABASE_URL": self.database_url,
            "SPINBOT_STORAGE_URL": f"s3://{BUCKET}",
            "SPINBOT_S3_ENDPOINT_URL": s3_endpoint,
            "SPINBOT_API_KEYS": f"{KEY_A},{KEY_B}",
            "SPINBOT_DATA_DIR": str(tmp / "data"),
            "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9",
            "SPINBOT_TALK_MAX_PIXELS": str(256 * 256),
            "SPINBOT_QUEUE_LOCK_SECONDS": "3",
            "SPINBOT_JOB_LEASE_SECONDS": "4",  # a killed API's jobs are taken over within seconds
            "SPINBOT_QUEUE_STALLED_CHECK_SECONDS": "1",
            "SPINBOT_QUEUE_REDIS_RETRY_SECONDS": "20",
            "SPINBOT_WORKER_HEARTBEAT_SECONDS": "0.3",
            "SPINBOT_WORKER_WATCHDOG_SECONDS": "2",
            "SPINBOT_LOG_LEVEL": "WARNING",
        }
        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        self.redis_proc: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @classmethod
    @contextmanager
    def running(cls, tmp: Path, workers: int, api: bool = True, env: dict[str, str] | None = None) -> Iterator[Self]:
        """The machine's services, a moto S3 bucket, a Redis and a database of the stack's own, `workers` workers
        and (with `api`) the API, all up for the duration and stopped after; `env` added to the processes'."""
        with services.machine_services(), services.moto_s3() as endpoint:
            services.create_bucket(endpoint, BUCKET)
            stack = cls(tmp, endpoint)
            stack.env.update(env or {})
            stack.start_redis()
            stack.create_database()
            try:
                for _ in range(workers):
                    stack.start_worker()
                if api:
                    stack.start_api()
                stack.wait_workers(workers)
                yield stack
            finally:
                stack.stop_all()
                stack.stop_redis()
                stack.drop_database()

    # --- services -----------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis_proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert services.wait_until(lambda: services.port_open(self.redis_port), 10)

    def stop_redis(self) -> None:
        self.redis_proc.kill()
        self.redis_proc.wait(10)

    def create_database(self) -> None:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.pg_db}")

    def drop_database(self) -> None:
        get_engine(self.database_url).dispose()
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.pg_db} WITH (FORCE)")

    # --- spinbot processes --------------------------------------------------------------------------------------
    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen([sys.executable, "-m", "spinbot", *args], env=self.env, stdout=out, stderr=out)

    def start_api(self) -> None:
        self.api = self.serve(self.api_port, "api.log")

    def serve(self, port: int, log: str) -> subprocess.Popen:
        """`spinbot serve` on `port`, once it answers; one that does not is killed here (stop_all does not know it)."""
        proc = self._spawn("serve", "--port", str(port), log=log)
        if not services.wait_until(lambda: self._answers(port), 60):
            self.kill(proc)
            raise AssertionError((self.tmp / log).read_text()[-3000:])
        return proc

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self) -> subprocess.Popen:
        proc = self._spawn("worker", "--queues", "gpu,cpu", log=f"worker-{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def live_workers(self):
        return list_workers(redis.Redis(port=self.redis_port))

    def wait_workers(self, count: int) -> None:
        assert services.wait_until(lambda: len(self.live_workers()) >= count, 60), "workers did not start"

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    # --- API ----------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def call(self, method: str, path: str, key: str = KEY_A, headers: dict | None = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def upload(self, kind: str, path: Path, key: str = KEY_A, name: str | None = None) -> httpx.Response:
        with open(path, "rb") as f:
            return self.call("POST", "/v1/uploads", key, data={"kind": kind}, files={"file": (name or path.name, f)})

    def submit(self, script: str = "Ever tried. Ever failed. No matter.", **params) -> str:
        image = self.upload("portrait", portrait_path(self.tmp)).json()["id"]
        voice = self.upload("voice", voice_path()).json()["id"]
        body = {
            "prompt": "failing better",
            "image": image,
            "voice": voice,
            "ref_text": BECKETT_TRANSCRIPT,
            "params": {"script": {"text": script}, **params},
        }
        r = self.call("POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/v1/jobs/{job_id}").json()

    def wait_job(self, job_id: str, until, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                job = self.job(job_id)
                if until(job):
                    return job
            except httpx.HTTPError:
                pass  # the API may be restarting
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach the expected state: {self.job(job_id)}")

    def bucket_keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def node(job: dict, node_id: str) -> dict:
    return next(n for n in job["nodes"] if n["id"] == node_id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack.running(tmp_path_factory.mktemp("stack"), workers=2) as s:
        yield s


def collect_sse(stack: Stack, job_id: str, events: list, done: threading.Event) -> None:
    url = f"{stack.url}/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=300) as reply:
        kind = None
        for line in reply.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("node", "job", "snapshot"):
                events.append(
                    {"kind": "snapshot", "job": json.loads(line.split(":", 1)[1])}
                    if kind == "snapshot"
                    else json.loads(line.split(":", 1)[1])
                )
    done.set()


def test_job_runs_through_two_workers_with_artifacts_in_s3_states_in_postgres_and_ordered_sse(stack):
    job_id = stack.submit()
    events: list[dict] = []
    done = threading.Event()
    threading.Thread(target=collect_sse, args=(stack, job_id, events, done), daemon=True).start()
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL)
    assert job["status"] == "succeeded", job
    assert done.wait(30), "the event stream did not end with the job"

    # Artifacts are in the bucket, under the job's prefix, one per recorded artifact.
    keys = [k for k in stack.bucket_keys(f"jobs/{job_id}/") if "/live/" not in k]
    assert {k.split("/")[2] for k in keys} == {"f5_to_tts", "infinite_talk", "upscale_video"}
    assert len(keys) == len(job["artifacts"]) == 3
    # Beside them, the live output that the workers wrote as the video rendered, served by the API.
    for node_id in ("infinite_talk", "upscale_video"):
        got = httpx.get(
            f"{stack.url}/v1/jobs/{job_id}/live/{node_id}/index.m3u8", headers={"Authorization": f"Bearer {KEY_A}"}
        )
        assert got.status_code == 200 and got.text.rstrip().endswith("#EXT-X-ENDLIST"), got.text
    # States are in PostgreSQL.
    stored = JobStore(get_engine(stack.database_url)).get(job_id)
    assert stored.status == "succeeded" and [n.status for n in stored.nodes] == ["succeeded"] * 4
    # The SSE stream began with the job as it was, then delivered progress for every node not finished by then, in
    # pipeline order, never going back, with the job's overall progress rising to 1.
    assert events[0]["kind"] == "snapshot"
    finished = {n["id"] for n in events[0]["job"]["nodes"] if n["status"] == "succeeded"}
    following = [n for n in PIPELINE_NODES if n not in finished]
    assert following[-2:] == ["infinite_talk", "upscale_video"], finished  # the renders were ahead when it connected
    node_events = [e for e in events if e["kind"] == "node"]
    first = {n: next(i for i, e in enumerate(node_events) if e["node_id"] == n) for n in following}
    last = {n: max(i for i, e in enumerate(node_events) if e["node_id"] == n) for n in following}
    for a, b in itertools.pairwise(following):
        assert last[a] < first[b], f"{a} events after {b} started"
    for n in following:
        progress = [e["progress"] for e in node_events if e["node_id"] == n and e["status"] == "running"]
        assert n == "script" or progress, n
        assert progress == sorted(progress), f"{n}: progress {progress}"
        assert node_events[last[n]]["status"] == "succeeded"
    overall = [e["progress"] if e["kind"] == "job" else e["job_progress"] for e in events if e["kind"] != "snapshot"]
    assert overall == sorted(overall) and overall[-1] == 1.0
    assert events[-1]["kind"] == "job" and events[-1]["status"] == "succeeded"
    # The final video can be downloaded (streamed from S3 by the API).
    video = next(a for a in job["artifacts"] if a["node_id"] == "upscale_video")
    got = httpx.get(stack.url + video["url"], headers={"Authorization": f"Bearer {KEY_A}"}, follow_redirects=True)
    assert got.status_code == 200 and len(got.content) == video["size"]


def test_killed_worker_job_finishes_on_the_other_worker_with_one_artifact_set(stack):
    stack.wait_workers(2)
    job_id = stack.submit(LONG_SCRIPT)
    stack.wait_job(job_id, lambda j: node(j, "upscale_video")["status"] == "running")

    def running_it():
        return next(
            (
                w
                for w in stack.live_workers()
                if any(r.job_id == job_id and r.node_id == "upscale_video" for r in w.running)
            ),
            None,
        )

    victim = services.wait_until(running_it, 10, 0.05) and running_it()
    proc = next(p for p in stack.workers if p.pid == victim.pid)
    stack.kill(proc)
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL)
    assert job["status"] == "succeeded", job
    # The other worker started the task again from nothing: a second attempt, not the first one's progress going back.
    assert node(job, "upscale_video")["attempts"] >= 2, node(job, "upscale_video")
    artifacts = [key for key in stack.bucket_keys(f"jobs/{job_id}/") if "/live/" not in key]
    assert [key for key in artifacts if "/upscale_video/" in key] == [f"jobs/{job_id}/upscale_video/upscaled.mp4"]
    assert len(artifacts) == 3
    # The live output is one set too: the second attempt's, which replaced what the killed one had written.
    live = f"jobs/{job_id}/upscale_video/live/"
    playlist = stack.s3.get_object(Bucket=BUCKET, Key=live + "index.m3u8")["Body"].read().decode()
    listed = [live + line for line in playlist.splitlines() if line.startswith("seg-")]
    # and its claim on the folder (tasks/live.py: a superseded run stops writing there)
    assert listed and sorted(listed + [live + "index.m3u8", live + "owner.json"]) == stack.bucket_keys(live)
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    stack.start_worker()  # back to two for the next tests


def test_api_killed_and_restarted_mid_job_finishes_the_job(stack):
    stack.wait_workers(2)
    job_id = stack.submit(LONG_SCRIPT)
    stack.wait_job(job_id, lambda j: node(j, "infinite_talk")["status"] in ("queued", "running"))
    stack.kill(stack.api)
    stack.start_api()
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL)
    assert job["status"] == "succeeded", job
    assert node(job, "script")["attempts"] == 1 and node(job, "f5_to_tts")["attempts"] == 1


def test_cancelling_a_running_job_stops_its_worker_within_5_seconds(stack):
    stack.wait_workers(2)
    job_id = stack.submit(LONG_SCRIPT)
    stack.wait_job(job_id, lambda j: node(j, "upscale_video")["status"] == "running")
    asked = time.monotonic()
    assert stack.call("POST", f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert services.wait_until(
        lambda: not any(r.job_id == job_id for w in stack.live_workers() for r in w.running), 10, 0.05
    )
    stopped_after = time.monotonic() - asked
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL, timeout=30)
    assert job["status"] == "cancelled" and node(job, "upscale_video")["status"] == "cancelled"
    assert stopped_after < 5, f"worker stopped after {stopped_after:.1f} s"


def test_redis_restart_mid_job_never_hangs(stack):
    stack.wait_workers(2)
    job_id = stack.submit(LONG_SCRIPT)
    stack.wait_job(job_id, lambda j: node(j, "infinite_talk")["status"] in ("queued", "running"))
    stack.stop_redis()
    time.sleep(1)
    stack.start_redis()
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL, timeout=240)
    if job["status"] == "failed":
        assert job["error"] and "\n" not in job["error"]
    else:
        assert job["status"] == "succeeded"
    stack.wait_workers(2)


def test_other_keys_get_404_and_bad_requests_write_nothing(stack):
    job_id = stack.submit()
    job = stack.wait_job(job_id, lambda j: j["status"] in FINAL)
    assert stack.call("GET", f"/v1/jobs/{job_id}", KEY_B).status_code == 404
    assert stack.call("POST", f"/v1/jobs/{job_id}/cancel", KEY_B).status_code == 404
    for art in job["artifacts"]:
        assert stack.call("GET", art["url"], KEY_B).status_code == 404
    before = stack.bucket_keys("")
    text = stack.tmp / "portrait.png"
    text.write_text("plain text, not an image")
    assert stack.upload("portrait", text).status_code == 400
    huge = stack.tmp / "huge.wav"
    huge.write_bytes(b"\0" * (51 * 1024 * 1024))
    assert stack.upload("voice", huge).status_code == 413
    body = {"prompt": "x", "image": "0" * 32, "voice": "0" * 32}
    bad = [
        (b"{oops", "malformed JSON"),
        (json.dumps({**body, "pipeline": "nope"}).encode(), "unknown pipeline"),
        (json.dumps({**body, "params": {"upscale_video": {"scale": 4}}}).encode(), "upscale_video.scale: unknown"),
    ]
    for raw, message in bad:
        r = stack.call("POST", "/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 and message in r.json()["error"]
    assert stack.bucket_keys("") == before
