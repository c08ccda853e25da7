"""A webhook of a job whose tasks ran on a Redis worker: `spinbot serve` (the control plane, which finishes the
job) sends it to a receiver on loopback; PostgreSQL, Redis and an S3 server as in production."""

from __future__ import annotations

import json

import pytest

import spinbot.queue  # noqa: F401 - before test_services_e2e's spinbot.worker.heartbeat, which imported first is circular
from spinbot.control.callback_signing import verify
from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from tests.integration.test_services_e2e import Stack
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    allow_loopback = {"SPINBOT_CALLBACK_ALLOW_PRIVATE": "true"}  # the receiver is on loopback
    with Stack.running(tmp_path_factory.mktemp("callback-stack"), workers=1, env=allow_loopback) as s:
        yield s


def test_a_job_rendered_on_a_queue_worker_calls_its_webhook_from_the_control_plane(stack):
    with Receiver() as receiver:
        body = {
            "prompt": "failing better",
            "image": stack.upload("portrait", portrait_path(stack.tmp)).json()["id"],
            "voice": stack.upload("voice", voice_path()).json()["id"],
            "ref_text": BECKETT_TRANSCRIPT,
            "params": {"script": {"text": "Ever tried. Ever failed."}},
            "callback_url": f"{receiver.url}/done?job=1",
        }
        r = stack.call("POST", "/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        (call,) = receiver.wait(1, timeout=300)
        job = stack.wait_job(created["id"], lambda j: j["callback"]["state"] == "delivered", timeout=30)
    assert verify(created["callback_secret"], call.headers, call.body) and call.path == "/done?job=1"
    event = json.loads(call.body)
    assert event["type"] == "job.succeeded" and event["job"]["status"] == "succeeded"
    assert {a["node_id"] for a in event["job"]["artifacts"]} >= {"f5_to_tts", "infinite_talk", "upscale_video"}
    assert job["callback"]["attempts"] == 1 and job["callback"]["last_status"] == 200
