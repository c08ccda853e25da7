"""The HTTP API in this process (FastAPI's TestClient on the embedded defaults), for the route tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.control.requests import JobRequest
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import reset_settings

LOOPBACK_URL = "http://localhost"  # a server without API keys answers requests to the loopback only
KEY = "key-a-123"  # the one API key of the `keyed_client` fixture (tests/unit/conftest.py)
AUTH = {"Authorization": f"Bearer {KEY}"}


def local_client(app, **options) -> TestClient:
    """FastAPI's TestClient addressed to localhost (its default Host, `testserver`, is refused without API keys)."""
    return TestClient(app, base_url=LOOPBACK_URL, **options)


@contextmanager
def api_client(monkeypatch: pytest.MonkeyPatch, *keys: str) -> Iterator[TestClient]:
    """The app with these API keys, started and stopped as a client's `with` does."""
    monkeypatch.setenv("SPINBOT_API_KEYS", ",".join(keys))
    reset_settings()
    with local_client(create_app()) as client:
        yield client


def upload_file(client: TestClient, kind: str, path: Path):
    """POST /v1/uploads of the file at `path` as `kind` (portrait, voice) with the keyed client's key: the answer."""
    with open(path, "rb") as f:
        return client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=AUTH)


def stored(data_dir: Path) -> list[str]:
    """The files under the data folder's uploads/ and jobs/ (what a refused request must not leave behind)."""
    return sorted(
        p.relative_to(data_dir).as_posix()
        for p in data_dir.rglob("*")
        if p.is_file() and p.parts[len(data_dir.parts)] in ("uploads", "jobs")
    )


def unrun_job(client: TestClient, folder: Path, key: str) -> str:
    """A job of `key` that is created but not run: the test plays its nodes' part (the sample portrait is written
    into `folder`)."""
    runner = client.app.state.services.runner
    return runner.create_job(
        JobRequest(prompt="the sea", image=portrait_path(folder), voice=voice_path(), owner=owner_of(key))
    )
