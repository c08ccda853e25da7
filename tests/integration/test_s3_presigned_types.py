"""A URL presigned for SPINBOT_S3_PUBLIC_URL names the Content-Type and Content-Disposition S3 answers with, from the
key's suffix (inert types only), never the object's stored type: an upload stored before uploads got their detected
type kept the client's own (text/html on a portrait), and was a web page on the public endpoint."""

from __future__ import annotations

import uuid

import httpx
import pytest

from spinbot.api.auth import owner_of
from tests.integration.test_api_s3_artifacts import KEY, make_client

pytestmark = pytest.mark.integration

PAGE = b"<html><script>alert(document.domain)</script></html>"


@pytest.fixture(scope="module")
def s3_endpoint():
    from tests.support import services

    with services.moto_s3() as endpoint:
        yield endpoint


def job_with_legacy_input(client, name: str) -> str:
    """A job whose portrait is an object stored as the client sent it: its type text/html, as before 8f287f5."""
    runner = client.app.state.services.runner
    key = f"uploads/{owner_of(KEY)}/{uuid.uuid4().hex}/{name}"
    runner.artifacts.put_bytes(key, PAGE, content_type="text/html")
    job_id = runner.jobs.new_id()
    inputs = {"values": {"prompt": "p"}, "artifacts": {"source_image": key}}
    runner.jobs.create_job(job_id, "f5tts_infinitetalk", [], inputs, {}, owner_of(KEY))
    runner.jobs.set_job_status(job_id, "failed")
    return f"/v1/jobs/{job_id}/inputs/source_image"


@pytest.mark.parametrize(
    ("name", "served"),
    [("portrait.png", "image/png"), ("portrait.html", "application/octet-stream"), ("portrait.svg", None)],
)
def test_presigned_input_is_served_with_an_inert_type_as_a_download(
    spinbot_env, monkeypatch, s3_endpoint, name, served
):
    with make_client(spinbot_env, monkeypatch, s3_endpoint, s3_endpoint) as client:
        reply = client.get(job_with_legacy_input(client, name), headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 307
        fetched = httpx.get(reply.headers["location"])
        assert fetched.status_code == 200 and fetched.content == PAGE
        assert fetched.headers["content-type"] == (served or "application/octet-stream")
        assert fetched.headers["content-disposition"] == f'attachment; filename="{name}"'


def test_presigned_artifact_keeps_its_recorded_type(spinbot_env, monkeypatch, s3_endpoint):
    from tests.integration.test_api_s3_artifacts import DATA, video_job

    with make_client(spinbot_env, monkeypatch, s3_endpoint, s3_endpoint) as client:
        reply = client.get(video_job(client), headers={"Authorization": f"Bearer {KEY}"})
        fetched = httpx.get(reply.headers["location"])
        assert fetched.content == DATA and fetched.headers["content-type"] == "video/mp4"
        assert fetched.headers["content-disposition"] == 'attachment; filename="video.mp4"'
