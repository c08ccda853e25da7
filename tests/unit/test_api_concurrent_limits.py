"""Limits of one key under requests sent at the same moment (a probe of 2026-12-05: 80 job submissions at once from
one key with SPINBOT_MAX_ACTIVE_JOBS=20 made 36 jobs). Each test fails on the code before its fix."""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.control.admission import Admission
from spinbot.errors import TooManyJobs
from spinbot.samples import portrait_path
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore
from tests.support.api_client import local_client
from tests.support.server import serving
from tests.unit.test_api_hostile_input import AUTH, KEY, submit, upload_both

SENT_AT_ONCE = 6


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> Path:
    return portrait_path(tmp_path_factory.mktemp("portrait"))


def test_jobs_submitted_at_once_never_pass_the_active_limit(spinbot_env, use_settings, portrait, monkeypatch):
    """Every request counts the key's jobs before its inputs are checked, so requests sent at once all saw room:
    here each one's input check waits for the others, as it did on a busy server."""
    use_settings(api_keys=KEY, max_active_jobs=2)
    checked = Admission.check
    together = threading.Barrier(SENT_AT_ONCE, timeout=30)

    def check_together(self, *args, **kwargs):
        checked(self, *args, **kwargs)
        together.wait()

    monkeypatch.setattr(Admission, "check", check_together)
    with local_client(create_app()) as client:
        monkeypatch.setattr(client.app.state.services.executor, "submit", lambda job_id: None)  # none starts
        ids = upload_both(client, portrait)
        with ThreadPoolExecutor(SENT_AT_ONCE) as pool:
            answers = list(pool.map(lambda _: submit(client, ids), range(SENT_AT_ONCE)))
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201, 201] + [429] * (SENT_AT_ONCE - 2), [a.text for a in answers]
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error"].startswith("this key has 2 jobs waiting or running, the limit")
        jobs = client.app.state.services.runner.jobs
        assert jobs.count_unfinished(owner_of(KEY)) == 2
        assert jobs.list(owner=owner_of(KEY))[1] == 2  # nothing of the refused ones stored


def create_at_once(store, owner: str, limit: int, count: int) -> list[str]:
    """`count` jobs of `owner` written by as many threads at one moment, each with the limit: what each got."""
    start = threading.Barrier(count, timeout=30)

    def create(_: int) -> str:
        start.wait()
        try:
            store.create_job(
                store.new_id(),
                "p",
                [("a", "t", "python")],
                {"values": {}, "artifacts": {}},
                {},
                owner,
                max_active=limit,
            )
        except TooManyJobs:
            return "refused"
        return "created"

    with ThreadPoolExecutor(count) as pool:
        return sorted(pool.map(create, range(count)))


def test_the_store_holds_the_limit_on_sqlite(tmp_path):
    store = JobStore(get_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    assert create_at_once(store, "owner-a", 3, 12) == ["created"] * 3 + ["refused"] * 9
    assert store.count_unfinished("owner-a") == 3
    assert create_at_once(store, "owner-b", 3, 4).count("created") == 3  # another owner's limit is its own


# ---- uploads in progress --------------------------------------------------------------------------------------------
BOUNDARY = "b0undary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nportrait\r\n--{BOUNDARY}\r\n'
    'Content-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
).encode()
PART_END = f"\r\n--{BOUNDARY}--\r\n".encode()


def send_upload(port: int, key: str, data: bytes, whole: bool) -> socket.socket:
    """An upload of `data`: whole, or the file's first half only, the rest never sent (the connection held)."""
    body = PART_HEAD + data + PART_END
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(
        (
            f"POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + (body if whole else PART_HEAD + data[: len(data) // 2])
    )
    return conn


def answer_of(port: int, key: str) -> tuple[int, dict]:
    """A whole upload of a small file that is no image: its status and JSON body."""
    with send_upload(port, key, b"not an image at all", whole=True) as conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def spooled_uploads() -> int:
    """Uploads being written to a temporary file now (each in a folder of its own)."""
    return len(glob.glob(os.path.join(tempfile.gettempdir(), "spinbot-upload-*")))


def test_a_key_sends_at_most_its_limit_of_uploads_at_once(spinbot_env, use_settings):
    """Each upload in progress holds a temporary file of up to SPINBOT_MAX_UPLOAD_BYTES before the key's quota can
    count it: 30 uploads of one key held open at once were all being written (50 MiB each at the default)."""
    use_settings(api_keys=f"{KEY},other-key", max_uploads_per_key=2, api_request_timeout=20)
    before = spooled_uploads()
    with serving(create_app(), 20, 16) as port:
        held = [send_upload(port, KEY, b"\0" * 2_000_000, whole=False) for _ in range(2)]
        try:
            deadline = time.monotonic() + 10
            while spooled_uploads() < before + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answer_of(port, KEY) == (
                429,
                {
                    "error": "this key has 2 uploads in progress, the limit (SPINBOT_MAX_UPLOADS_PER_KEY=2); "
                    "send the next one when one has finished"
                },
            )
            assert answer_of(port, "other-key")[0] == 400  # another key's limit is its own: judged, not refused
        finally:
            for conn in held:
                conn.close()
        deadline = time.monotonic() + 10  # the slots come back when the uploads end, however they end
        while (status := answer_of(port, KEY)[0]) == 429 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 400


# ---- retries --------------------------------------------------------------------------------------------------------
def test_a_retry_counts_against_the_active_limit(spinbot_env, use_settings, portrait, monkeypatch):
    """A key at its limit retried its failed jobs, each pending again: 2 allowed, 4 waiting or running."""
    use_settings(api_keys=KEY, max_active_jobs=2)
    with local_client(create_app()) as client:
        monkeypatch.setattr(client.app.state.services.executor, "submit", lambda job_id: None)  # none starts
        jobs = client.app.state.services.runner.jobs
        made = {}
        for status in ("running", "failed", "failed", "interrupted"):
            job_id = jobs.new_id()
            jobs.create_job(job_id, "f5tts_infinitetalk", [], {"values": {}, "artifacts": {}}, {}, owner_of(KEY))
            jobs.set_job_status(job_id, status)
            made.setdefault(status, []).append(job_id)
        first, second, interrupted = *made["failed"], made["interrupted"][0]
        assert client.post(f"/v1/jobs/{first}/retry", headers=AUTH).status_code == 202  # 2 now: at the limit
        for job_id in (second, interrupted):
            answer = client.post(f"/v1/jobs/{job_id}/retry", headers=AUTH)
            assert answer.status_code == 429, answer.text
            assert answer.json()["error"].startswith("this key has 2 jobs waiting or running, the limit")
        assert jobs.get(second).status == "failed" and jobs.get(interrupted).status == "interrupted"  # as they were
        assert jobs.count_unfinished(owner_of(KEY)) == 2
        jobs.set_job_status(first, "failed")  # one ended: room for one retry again
        assert client.post(f"/v1/jobs/{second}/retry", headers=AUTH).status_code == 202


def test_an_upload_its_client_abandons_is_no_error_in_the_log(spinbot_env, use_settings, caplog):
    """Each upload whose client closed the connection mid-body was uvicorn's "Exception in ASGI application", a
    traceback of some 5 KB at error level: any client could fill the error log (and page whoever watches it)."""
    use_settings(api_keys=KEY, api_request_timeout=20)
    with caplog.at_level(logging.INFO), serving(create_app(), 20, 16) as port:
        for _ in range(3):
            send_upload(port, KEY, b"\0" * 2_000_000, whole=False).close()
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and sum("before its request's body ended" in r.getMessage() for r in caplog.records) < 3
        ):
            time.sleep(0.05)
        assert answer_of(port, KEY)[0] == 400  # the server goes on, and the key's upload slots came back
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    gone = [r for r in caplog.records if "before its request's body ended" in r.getMessage()]
    assert len(gone) == 3 and all(r.levelno == logging.INFO for r in gone)
