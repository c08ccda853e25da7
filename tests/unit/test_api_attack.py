"""Regression tests for what probing the running API as an outside attacker found (each failing on the code before
its fix), through FastAPI's TestClient on embedded defaults with two keys."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from spinbot.api.app import create_app
from spinbot.api.public_errors import STORAGE_FAILED
from spinbot.settings import reset_settings
from tests.support.api_client import local_client
from tests.unit.test_api_hardening import KEY_A, METRICS_KEY, add_artifact, auth, make_job


@pytest.fixture
def client(spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_API_KEYS", f"{KEY_A},key-b-456")
    monkeypatch.setenv("SPINBOT_METRICS_KEY", METRICS_KEY)
    reset_settings()
    with local_client(create_app()) as c:
        yield c


def test_private_answers_are_kept_by_no_cache(client):
    job_id = make_job(client, status="succeeded")
    artifact = add_artifact(client, job_id)
    answers = {
        "job": client.get(f"/v1/jobs/{job_id}", headers=auth()),
        "jobs": client.get("/v1/jobs", headers=auth()),
        "file": client.get(artifact, headers=auth()),
        "file by cookie": client.get(artifact),
        "file range": client.get(artifact, headers={**auth(), "Range": "bytes=0-3"}),
        "missing": client.get(f"/v1/jobs/{'0' * 32}", headers=auth()),
        "no key": client.get("/v1/jobs"),
        "metrics": client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}),
    }
    for what, answer in answers.items():
        assert answer.headers.get("cache-control") == "no-store", what
    assert answers["file"].headers["last-modified"]  # what let a shared cache keep it (RFC 9111 section 4.2.2)
    assert client.get("/").headers["cache-control"] == "no-cache"  # the page is no one's: revalidated, not refused


@pytest.mark.parametrize("segment", ["seg-0000\uff10.ts", "seg-\u0660\u0660\u0660\u0660\u0660.ts", "seg-00000.ts\n"])
def test_a_live_segment_name_in_other_digits_is_a_404(client, segment):
    # `\d` matched any script's digits: the name passed the route's check and the store refused it with a 400
    # naming its "artifact key"
    job_id = make_job(client, status="running")
    answer = client.get(f"/v1/jobs/{job_id}/live/f5_to_tts/{quote(segment)}", headers=auth())
    assert answer.status_code == 404 and "no live segment" in answer.json()["error"]
    assert "artifact key" not in answer.text


def test_an_upload_of_many_small_fields_is_refused_at_the_part_limit(client, monkeypatch):
    # each part cost a round of parser callbacks and a kept field: 50 MB of them, 850,000 parts, took 9 s
    from spinbot.api import upload_body

    seen = []
    monkeypatch.setattr(upload_body._Collector, "_part_end", lambda self: seen.append(self._field))
    body = b"".join(b'--XX\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(10_000))
    answer = client.post(
        "/v1/uploads",
        content=body + b"--XX--\r\n",
        headers={**auth(), "Content-Type": "multipart/form-data; boundary=XX"},
    )
    assert answer.status_code == 400 and f"at most {upload_body.MAX_PARTS} parts" in answer.json()["error"]
    assert len(seen) <= upload_body.MAX_PARTS


def test_keys_are_compared_as_values_of_one_length(client, monkeypatch):
    # hmac.compare_digest returns at once on values of different lengths: the time told how long a key is
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((len(a), len(b))) or real(a, b))
    for given in ("k", "key-a-12", KEY_A, "x" * 500):
        client.get("/v1/jobs", headers={"X-API-Key": given})
    assert compared and all(a == b for a, b in compared)
    assert client.get("/v1/jobs", headers={"X-API-Key": KEY_A}).status_code == 200


def test_node_metadata_reaches_clients_without_addresses_credentials_or_paths(client):
    # the script node records the Ollama host it asked (credentials and all) and a warning keeps its error's text;
    # every other client-facing text went through public_errors, the metadata went out as stored
    job_id = make_job(client, status="succeeded")
    meta = {
        "source": "fallback",
        "host": "http://llm-user:llm-secret@ollama.internal:11434",
        "reason": "HTTPStatusError: Client error '404 Not Found' for url 'http://ollama.internal:11434/api/generate'",
        "live": {
            "playlist": f"jobs/{job_id}/script/live/index.m3u8",
            "warning": "the live output stopped: Could not connect to the endpoint URL: http://minio.internal:9000/b",
        },
        "warnings": ["checkpoints stopped: [Errno 28] No space left on device: '/srv/spinbot-data/jobs/x/ckpt.bin'"],
        "ignored_params": {"model": "wanvideo/clip_vision_h.safetensors"},
    }
    jobs = client.app.state.services.runner.jobs
    jobs.node_succeeded(job_id, "script", {"values": {"text": "Hi."}, "artifacts": {}, "meta": meta}, [])
    shown = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()["nodes"][0]["meta"]
    text = str(shown)
    for internal in ("llm-secret", "ollama.internal", "minio.internal", "/srv/spinbot-data", "jobs/"):
        assert internal not in text, internal
    assert shown["source"] == "fallback" and shown["host"] == "<internal address>"
    assert shown["live"]["playlist"] == "index.m3u8" and shown["live"]["warning"] == STORAGE_FAILED
    assert shown["warnings"] == ["checkpoints stopped: [Errno 28] No space left on device: 'ckpt.bin'"]
    assert shown["ignored_params"] == meta["ignored_params"]  # what names no internal thing is left as it was
    assert client.get("/v1/jobs", headers=auth()).json()["items"][0]["nodes"][0]["meta"] == shown


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer not-a-key"), ("X-API-Key", KEY_A)],  # a bogus bearer was ignored: 200 as key A
        [("Authorization", f"Bearer {KEY_A}"), ("X-API-Key", "key-b-456")],  # answered as key B
        [("X-API-Key", "key-b-456"), ("X-API-Key", KEY_A)],
        [("Authorization", f"Bearer {KEY_A}"), ("Authorization", "Bearer key-b-456")],
    ],
    ids=["bogus-bearer", "two-keys", "x-api-key-twice", "bearer-twice"],
)
def test_a_request_with_two_different_keys_is_refused(client, headers):
    for path in ("/v1/jobs", "/metrics"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"].startswith("the request carries 2 different API keys")


def test_one_key_sent_in_both_headers_is_that_key(client):
    headers = [("Authorization", f"Bearer {KEY_A}"), ("X-API-Key", KEY_A), ("Authorization", "Basic cHJveHk6eA==")]
    assert client.get("/v1/jobs", headers=headers).status_code == 200
