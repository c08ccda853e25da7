"""Artifact downloads from an S3 store never show the internal endpoint or the access key: the API streams the object
(ranges included), or with SPINBOT_S3_PUBLIC_URL redirects to a URL presigned for that public endpoint."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.settings import reset_settings
from tests.support import services
from tests.support.api_client import local_client

pytestmark = pytest.mark.integration

KEY = "s3-artifact-key"
PUBLIC = "https://media.example.test"
DATA = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture(scope="module")
def s3_endpoint():
    with services.moto_s3() as endpoint:
        yield endpoint


def make_client(spinbot_env, monkeypatch, s3_endpoint, public_url: str | None):
    bucket = f"spinbot-{uuid.uuid4().hex[:12]}"
    for name, value in services.TEST_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SPINBOT_STORAGE_URL", f"s3://{bucket}")
    monkeypatch.setenv("SPINBOT_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("SPINBOT_API_KEYS", KEY)
    if public_url:
        monkeypatch.setenv("SPINBOT_S3_PUBLIC_URL", public_url)
    reset_settings()
    services.create_bucket(s3_endpoint, bucket)
    return local_client(create_app(), follow_redirects=False)


def video_job(client) -> str:
    runner = client.app.state.services.runner
    job_id = runner.jobs.new_id()
    runner.jobs.create_job(
        job_id,
        "f5tts_infinitetalk",
        [("upscale_video", "upscale_video", "python")],
        {"values": {"prompt": "p"}, "artifacts": {}},
        {},
        owner_of(KEY),
    )
    key = f"jobs/{job_id}/upscale_video/video.mp4"
    runner.artifacts.put_bytes(key, DATA, content_type="video/mp4")
    runner.jobs.node_succeeded(
        job_id,
        "upscale_video",
        {"values": {}, "artifacts": {"video": key}, "meta": {}},
        [{"name": "video.mp4", "key": key, "size": len(DATA), "content_type": "video/mp4"}],
    )
    runner.jobs.set_job_status(job_id, "succeeded")
    return f"/v1/jobs/{job_id}/artifacts/upscale_video/video.mp4"


def test_s3_artifact_is_streamed_by_the_api_with_ranges(spinbot_env, monkeypatch, s3_endpoint):
    with make_client(spinbot_env, monkeypatch, s3_endpoint, None) as client:
        url = video_job(client)
        whole = client.get(url, headers={"Authorization": f"Bearer {KEY}"})
        assert whole.status_code == 200 and whole.content == DATA
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
        part = client.get(url, headers={"Authorization": f"Bearer {KEY}", "Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == DATA[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
        endpoint = urlparse(s3_endpoint).netloc
        for reply in (whole, part):
            assert endpoint not in str(reply.headers) and "testing" not in str(reply.headers)


def test_s3_artifact_redirects_only_to_the_public_endpoint(spinbot_env, monkeypatch, s3_endpoint):
    with make_client(spinbot_env, monkeypatch, s3_endpoint, PUBLIC) as client:
        reply = client.get(video_job(client), headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 307
        location = reply.headers["location"]
        assert location.startswith(PUBLIC + "/") and urlparse(s3_endpoint).netloc not in location
        assert "X-Amz-Signature=" in location
