"""HEAD on every GET route (spinbot/api/head.py): the status and headers a GET gets, and no body."""

from __future__ import annotations

import pytest

from spinbot.media.segments import playlist_text
from spinbot.tasks.live import live_key
from tests.support.api_client import api_client, unrun_job

KEY, OTHER_KEY = "key-a-123", "key-b-456"
DATA = bytes(range(256)) * 300
SEGMENT = b"G" + bytes(187)
VARYING = {"date", "set-cookie"}  # the media cookie comes with a fresh expiry, or not at all once fresh


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(spinbot_env, monkeypatch):
    with api_client(monkeypatch, KEY, OTHER_KEY) as c:
        yield c


@pytest.fixture
def job_id(client, tmp_path) -> str:
    """A job of KEY (not run) with an artifact, its inputs and a live playlist with one segment."""
    runner = client.app.state.services.runner
    job_id = unrun_job(client, tmp_path, KEY)
    key = f"jobs/{job_id}/f5_to_tts/speech.wav"
    runner.artifacts.put_bytes(key, DATA)
    record = {"name": "speech.wav", "key": key, "size": len(DATA), "content_type": "audio/wav"}
    runner.jobs.node_succeeded(job_id, "f5_to_tts", {"values": {}, "artifacts": {"audio": key}, "meta": {}}, [record])
    runner.artifacts.put_bytes(live_key(job_id, "infinite_talk", "seg-00000.ts"), SEGMENT, "video/mp2t")
    runner.artifacts.put_bytes(live_key(job_id, "infinite_talk"), playlist_text([1.0], 1, False).encode())
    runner.jobs.set_job_status(job_id, "failed")
    return job_id


PATHS = [
    "/v1/jobs/{job}",
    "/v1/jobs/{job}/artifacts/f5_to_tts/speech.wav",
    "/v1/jobs/{job}/inputs/source_image",
    "/v1/jobs/{job}/inputs/narrator_voice",
    "/v1/jobs/{job}/live/infinite_talk/index.m3u8",
    "/v1/jobs/{job}/live/infinite_talk/seg-00000.ts",
    "/v1/jobs/{job}/events",
    "/v1/jobs",
    "/v1/params",
    "/",
    "/web/app.js",
    "/healthz",
    "/v1/jobs/{job}/artifacts/f5_to_tts/missing.wav",  # errors too: the same 404 and headers
    "/v1/jobs/0123456789abcdef0123456789abcdef",
]


def same_headers(head, get) -> None:
    assert head.status_code == get.status_code
    assert {k: v for k, v in head.headers.items() if k not in VARYING} == {
        k: v for k, v in get.headers.items() if k not in VARYING
    }


@pytest.mark.parametrize("path", PATHS)
def test_head_answers_with_get_s_status_and_headers_and_no_body(client, job_id, path):
    url = path.format(job=job_id)
    get = client.get(url, headers=auth())
    head = client.head(url, headers=auth())
    same_headers(head, get)
    assert head.content == b""


def test_head_of_a_range_is_the_206_a_get_gets(client, job_id):
    url = f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav"
    headers = {**auth(), "Range": "bytes=100-199"}
    head, get = client.head(url, headers=headers), client.get(url, headers=headers)
    same_headers(head, get)
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert head.headers["content-length"] == "100" and head.content == b""


def test_head_needs_the_key_as_get_does(client, job_id):
    refused = client.head(f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav")
    assert refused.status_code == 401 and refused.content == b""


@pytest.mark.parametrize("path", [p for p in PATHS if "{job}" in p])
def test_head_of_another_key_s_job_is_a_404_as_get_is(client, job_id, path):
    url, other = path.format(job=job_id), {"Authorization": f"Bearer {OTHER_KEY}"}
    head, get = client.head(url, headers=other), client.get(url, headers=other)
    same_headers(head, get)
    assert head.status_code == 404 and head.content == b""


def test_head_of_a_post_only_route_is_405_as_get_is(client):
    assert client.head("/v1/uploads", headers=auth()).status_code == 405


def test_head_requests_are_counted_under_their_route(client, job_id):
    client.head(f"/v1/jobs/{job_id}", headers=auth())
    metrics = client.get("/metrics", headers=auth()).text
    assert 'spinbot_http_requests_total{method="HEAD",route="/v1/jobs/{job_id}",status="200"} 1.0' in metrics
