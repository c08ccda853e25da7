"""Webhook delivery through the API: a real receiver on loopback gets the signed call of a job that succeeded, failed
or was cancelled; retries, the answers that end a delivery, a deleted or re-run job, a call left due by a process
that did not send it, and the attempt's time limits.

The jobs' python nodes return at once (a stand-in dispatcher), so each job takes a fraction of a second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time

import anyio

from spinbot.api.app import create_app
from spinbot.control.callback_signing import new_secret, verify
from spinbot.control.callback_url import Target, parse_callback_url
from spinbot.control.callbacks import (
    AttemptLimits,
    post,
)
from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.samples import portrait_path, voice_path
from tests.support.api_client import local_client
from tests.support.callback_api import AttemptCounter
from tests.support.quick_dispatcher import QuickDispatcher
from tests.support.webhook_receiver import Receiver


def test_a_succeeded_job_posts_itself_signed_to_its_callback(start_api, caplog):
    caplog.set_level(logging.INFO)
    api = start_api(callback_allow_private=True)
    with Receiver() as receiver:
        r = api.submit(f"{receiver.url}/hooks/spinbot?token=s3cret")
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["callback_secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        assert created["callback"]["url_host"] == f"127.0.0.1:{receiver.port}"
        job = api.settled(created["id"])
        (call,) = receiver.wait(1)
    assert call.path == "/hooks/spinbot?token=s3cret"
    assert call.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert call.headers["content-type"] == "application/json"
    assert verify(secret, call.headers, call.body)
    # the signature by hand, as the README tells a receiver to compute it
    signed = f"{call.headers['webhook-id']}.{call.headers['webhook-timestamp']}.".encode() + call.body
    digest = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256).digest()
    assert call.headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    event = json.loads(call.body)
    assert event["type"] == "job.succeeded" and event["event_id"] == call.headers["webhook-id"]
    assert event["job"]["id"] == created["id"] and event["job"]["status"] == "succeeded"
    assert event["job"]["progress"] == 1.0 and "callback" not in event["job"]
    assert [n["status"] for n in event["job"]["nodes"]] == ["succeeded"] * 4
    callback = job["callback"]
    assert callback["state"] == "delivered" and callback["delivered"] is True
    assert (callback["attempts"], callback["last_status"], callback["last_error"]) == (1, 200, None)
    assert callback["event_id"] == call.headers["webhook-id"]
    shown = json.dumps(api.job(created["id"]))
    assert "s3cret" not in shown and "whsec_" not in shown  # neither the URL's token nor the secret again
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "callback delivered" in logged  # and httpx's own line, with the whole URL, not at all:
    assert "s3cret" not in logged and "whsec_" not in logged


def test_a_failed_job_posts_its_failure_and_a_tampered_body_does_not_verify(start_api):
    api = start_api(fail=True, callback_allow_private=True)
    with Receiver() as receiver:
        created = api.submit(f"{receiver.url}/hook").json()
        job = api.settled(created["id"])
        (call,) = receiver.wait(1)
    event = json.loads(call.body)
    assert event["type"] == "job.failed" and event["job"]["status"] == "failed"
    assert "the render broke" in event["job"]["error"]
    assert job["status"] == "failed" and job["callback"]["state"] == "delivered"
    secret = created["callback_secret"]
    assert verify(secret, call.headers, call.body)
    assert not verify(secret, call.headers, call.body.replace(b"failed", b"succeeded"))
    assert not verify(new_secret(), call.headers, call.body)


def test_a_cancelled_job_posts_its_cancellation(start_api):
    api = start_api(hold=True, callback_allow_private=True)
    with Receiver() as receiver:
        created = api.submit(f"{receiver.url}/hook").json()
        assert api.dispatcher.holding.wait(20)
        assert api.job(created["id"])["callback"]["state"] == "waiting"  # nothing sent while it runs
        assert api.client.post(f"/v1/jobs/{created['id']}/cancel", headers=api.headers()).status_code == 202
        job = api.settled(created["id"])
        (call,) = receiver.wait(1)
    event = json.loads(call.body)
    assert event["type"] == "job.cancelled" and event["job"]["status"] == "cancelled" == job["status"]
    assert verify(created["callback_secret"], call.headers, call.body)


def test_a_failures_call_due_while_its_job_runs_again_is_superseded_and_the_new_ending_is_called(start_api):
    api = start_api(fail=True, callback_allow_private=True, callback_retry_seconds=1.0)
    with Receiver(answers=[500, 200]) as receiver:
        job_id = api.submit(f"{receiver.url}/hook").json()["id"]
        first = receiver.wait(1)[0]
        api.dispatcher.fail, api.dispatcher.hold = False, True
        assert api.client.post(f"/v1/jobs/{job_id}/retry", headers=api.headers()).status_code == 202
        assert api.dispatcher.holding.wait(20)
        superseded = api.settled(job_id)["callback"]  # its retry came while the job ran again: not sent
        assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.headers()).status_code == 202
        calls = receiver.wait(2)
        job = api.settled(job_id)  # the second call was sent: its event is the job's, pending until recorded
    assert superseded["state"] == "superseded" and superseded["attempts"] == 1
    assert [json.loads(c.body)["type"] for c in calls] == ["job.failed", "job.cancelled"]
    assert calls[1].headers["webhook-id"] != first.headers["webhook-id"]
    assert job["callback"]["state"] == "delivered" and job["callback"]["event_id"] == calls[1].headers["webhook-id"]


def test_500_and_429_are_tried_again_with_the_same_event_id_until_one_succeeds(start_api):
    api = start_api(callback_allow_private=True)
    with Receiver(answers=[500, 429, 200]) as receiver:
        created = api.submit(f"{receiver.url}/hook").json()
        job = api.settled(created["id"])
        calls = receiver.wait(3)
    assert len(calls) == 3 and len({c.headers["webhook-id"] for c in calls}) == 1
    assert all(verify(created["callback_secret"], c.headers, c.body) for c in calls)
    assert calls[1].at - calls[0].at >= 0.2 and calls[2].at - calls[1].at >= 0.6  # 0.2 s, then 3x as long
    assert job["callback"] | {"last_attempt_at": None} == {
        "url_host": f"127.0.0.1:{receiver.port}",
        "state": "delivered",
        "delivered": True,
        "event_id": calls[0].headers["webhook-id"],
        "attempts": 3,
        "last_attempt_at": None,
        "last_status": 200,
        "last_error": None,
    }


def test_a_4xx_ends_the_delivery_and_5xx_stops_after_the_last_attempt(start_api):
    api = start_api(callback_allow_private=True, callback_max_attempts=2)
    with Receiver(answers=[404]) as gone, Receiver(answers=[503]) as down:
        first, second = api.submit(f"{gone.url}/h").json(), api.submit(f"{down.url}/h").json()
        assert api.settled(first["id"])["callback"] | {"last_attempt_at": None, "event_id": None} == {
            "url_host": f"127.0.0.1:{gone.port}",
            "state": "failed",
            "delivered": False,
            "event_id": None,
            "attempts": 1,
            "last_attempt_at": None,
            "last_status": 404,
            "last_error": "HTTP 404",
        }
        callback = api.settled(second["id"])["callback"]  # failed: nothing due any more, no third call to wait for
    assert (callback["state"], callback["attempts"], callback["last_error"]) == ("failed", 2, "HTTP 503")
    assert len(gone.received) == 1 and len(down.received) == 2


def test_a_redirect_is_not_followed(start_api):
    api = start_api(callback_allow_private=True)
    with Receiver() as inside, Receiver(answers=[302], redirect_to="") as outside:
        outside.redirect_to = f"{inside.url}/internal"
        job = api.settled(api.submit(f"{outside.url}/hook").json()["id"])
    assert len(outside.received) == 1 and inside.received == []
    assert job["callback"]["state"] == "failed" and job["callback"]["last_error"] == (
        "HTTP 302: redirects are not followed"
    )


def test_a_job_deleted_before_its_retry_gets_nothing_more(start_api, monkeypatch):
    api = start_api(callback_allow_private=True, callback_retry_seconds=1.0)
    attempts = AttemptCounter(api.sender(), monkeypatch, hold_after=1)  # the retry waits for the delete
    with Receiver(answers=[500, 200]) as receiver:
        job_id = api.submit(f"{receiver.url}/hook").json()["id"]
        attempts.wait(1)  # the 500 recorded and its retry scheduled
        assert api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers()).status_code == 204
        attempts.release()
        attempts.wait(2)  # the retry came, and found nothing to send
    assert len(receiver.received) == 1


def test_a_call_left_due_by_a_process_without_a_sender_goes_out_from_the_api(spinbot_env, use_settings, tmp_path):
    """`spinbot run` (or an API process that stopped) records the event; an API's sweeper sends it."""
    use_settings(callback_allow_private=True)
    with Receiver() as receiver:
        runner = Runner(dispatcher=QuickDispatcher())
        request = JobRequest(
            prompt="p",
            image=portrait_path(tmp_path),
            voice=voice_path(),
            ref_text="x",
            params={"script": {"text": "Hello there."}},
            callback_url=f"{receiver.url}/hook",
        )
        job_id = runner.create_job(request)
        assert runner.run(job_id).status == "succeeded"
        assert runner.jobs.get(job_id).callback["state"] == "pending"
        with local_client(create_app()):  # its start looks for due calls
            (call,) = receiver.wait(1)
    assert json.loads(call.body)["job"]["id"] == job_id
    assert runner.jobs.get(job_id).callback["state"] == "delivered"


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_at_the_total_time_limit():
    """Each byte comes well within the read timeout; the attempt still ends at its total limit."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                conn.sendall(bytes([byte]))

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    target = Target(parse_callback_url(f"http://127.0.0.1:{server.getsockname()[1]}/", 2048), "127.0.0.1")
    started = time.monotonic()
    outcome = anyio.run(post, target, {}, b"{}", AttemptLimits(1.0, 1.5), True)
    elapsed = time.monotonic() - started
    stop.set()
    server.close()
    assert outcome.status is None and outcome.error == "no answer within 1.5 s" and outcome.retry
    assert 1.4 < elapsed < 10.0  # the drip would last 200 s; a loaded machine may be seconds late


def test_the_lookups_time_counts_in_the_attempts_total_limit():
    """SPINBOT_CALLBACK_TIMEOUT bounds the whole attempt: a lookup that used it all leaves the POST no time."""
    with Receiver() as receiver:
        target = Target(parse_callback_url(f"{receiver.url}/hook", 2048), "127.0.0.1")
        spent = AttemptLimits(1.0, 1.5, started=time.monotonic() - 1.5)
        outcome = anyio.run(post, target, {}, b"{}", spent, True)
    assert outcome.error == "no answer within 1.5 s" and outcome.retry and receiver.received == []


def test_a_receiver_that_never_answers_fails_the_attempt_within_the_timeout(start_api):
    api = start_api(callback_allow_private=True, callback_timeout=1, callback_max_attempts=1)
    with Receiver(hang=True) as receiver:
        job_id = api.submit(f"{receiver.url}/hook").json()["id"]
        (call,) = receiver.wait(1)
        job = api.settled(job_id)  # the receiver answers only when the test ends
        settled_after = time.monotonic() - call.at
    assert settled_after < 10.0  # 1 s and the recording; the default limit would be 15 s
    assert job["callback"]["state"] == "failed" and job["callback"]["last_error"] == "no answer within 1 s"
