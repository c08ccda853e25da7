"""An API whose jobs take no time (or wait to be cancelled), keyed, for the Idempotency-Key tests on SQLite
(tests/unit/test_idempotency.py) and PostgreSQL (tests/integration/test_idempotency_postgres.py); and N requests with
one key sent at the same moment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from spinbot.api.routes import jobs as jobs_route
from spinbot.samples import portrait_path, voice_path

KEY_A, KEY_B = "key-idem-a", "key-idem-b"


class Api:
    def __init__(self, client: TestClient, tmp: Path):
        self.client, self.tmp = client, tmp
        self.inputs: dict[str, dict[str, str]] = {}

    def upload(self, key: str = KEY_A) -> dict[str, str]:
        if key not in self.inputs:
            ids = {}
            for kind, path in (("portrait", portrait_path(self.tmp)), ("voice", voice_path())):
                with open(path, "rb") as f:
                    r = self.client.post(
                        "/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=auth(key)
                    )
                assert r.status_code == 201, r.text
                ids["image" if kind == "portrait" else "voice"] = r.json()["id"]
            self.inputs[key] = ids
        return self.inputs[key]

    def body(self, key: str = KEY_A, **extra: Any) -> dict[str, Any]:
        return {**self.upload(key), "prompt": "p", "params": {"script": {"text": "Hello there."}}, **extra}

    def post(self, body: dict[str, Any] | bytes, idempotency_key: str | None, key: str = KEY_A) -> httpx.Response:
        headers = {**auth(key), "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if isinstance(body, bytes):
            return self.client.post("/v1/jobs", content=body, headers=headers)
        return self.client.post("/v1/jobs", json=body, headers=headers)

    def total(self, key: str = KEY_A) -> int:
        return self.client.get("/v1/jobs", headers=auth(key)).json()["total"]

    def settled(self, job_id: str, key: str = KEY_A, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not end")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_at_once(api: Api, monkeypatch, body: dict[str, Any], idempotency_key: str, n: int) -> list[httpx.Response]:
    """`n` requests with one key in threads, each held after its look-up of the key until all have looked (none
    found a job), so every one goes on to create the job and the database's unique index decides between them."""
    barrier = threading.Barrier(n, timeout=30)
    real: Callable[..., Any] = jobs_route.find_keyed_job

    def look_then_wait(*args: Any) -> Any:
        found = real(*args)
        barrier.wait()
        return found

    monkeypatch.setattr(jobs_route, "find_keyed_job", look_then_wait)
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: api.post(body, idempotency_key), range(n)))
    monkeypatch.setattr(jobs_route, "find_keyed_job", real)
    return answers


def assert_one_job_made(api: Api, answers: list[httpx.Response]) -> str:
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * (len(answers) - 1) + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in answers if r.status_code == 200)
    assert api.total() == 1
    return answers[0].json()["id"]
