"""The webhook tests' API: jobs whose nodes take no time, a keyed client, and what a job's webhook looks like once
it settled (tests/unit/callbacks)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from spinbot.control.callbacks import CallbackSender
from spinbot.samples import portrait_path, voice_path

KEY = "key-callbacks-1"
PUBLIC = "93.184.215.14"  # a public address; nothing here connects to it
FINAL_CALLBACK_STATES = ("delivered", "failed", "superseded")


class Api:
    def __init__(self, client: TestClient, tmp: Path):
        self.client, self.tmp = client, tmp
        self.inputs: dict[str, str] = {}
        self.dispatcher: Any = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}

    def upload(self) -> dict[str, str]:
        if not self.inputs:
            for kind, path in (("portrait", portrait_path(self.tmp)), ("voice", voice_path())):
                with open(path, "rb") as f:
                    r = self.client.post(
                        "/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=self.headers()
                    )
                assert r.status_code == 201, r.text
                self.inputs["image" if kind == "portrait" else "voice"] = r.json()["id"]
        return self.inputs

    def submit(self, callback_url: str | None, **extra):
        body = {**self.upload(), "prompt": "p", "params": {"script": {"text": "Hello there."}}, **extra}
        return self.client.post("/v1/jobs", json={**body, "callback_url": callback_url}, headers=self.headers())

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}", headers=self.headers()).json()

    def settled(self, job_id: str, timeout: float = 20.0) -> dict:
        """The job once its webhook is delivered, failed or superseded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if (job.get("callback") or {}).get("state") in FINAL_CALLBACK_STATES:
                return job
            time.sleep(0.05)
        raise AssertionError(f"the webhook did not settle: {self.job(job_id).get('callback')}")

    def sender(self) -> CallbackSender:
        sender = self.client.app.state.runner.callbacks  # type: ignore[attr-defined]
        assert sender is not None
        return sender

    def total(self) -> int:
        return self.client.get("/v1/jobs", headers=self.headers()).json()["total"]


class AttemptCounter:
    """The sender's attempts that ended, whatever their outcome: a test waits for one instead of sleeping past it."""

    def __init__(self, sender: CallbackSender, monkeypatch: pytest.MonkeyPatch, hold_after: int | None = None):
        """With `hold_after`, the attempts after that many wait for `release()` before they start (a test does
        something between two attempts whatever the machine's speed)."""
        self.ended, self.started, self.hold_after = 0, 0, hold_after
        self._changed, self._released = threading.Condition(), threading.Event()
        attempt = sender.attempt

        def counted(job_id: str) -> None:
            with self._changed:
                self.started += 1
                held = self.hold_after is not None and self.started > self.hold_after
            if held:
                self._released.wait(20)
            try:
                attempt(job_id)
            finally:
                with self._changed:
                    self.ended += 1
                    self._changed.notify_all()

        monkeypatch.setattr(sender, "attempt", counted)

    def release(self) -> None:
        self._released.set()

    def wait(self, count: int, timeout: float = 20.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.ended >= count, timeout), (
                f"{self.ended} attempts, {count} expected"
            )
