"""Webhooks (callback_url): a real receiver on loopback gets the signed call of a job that succeeded or failed; the
retries, the URLs refused at submission (SSRF), DNS rebinding, redirects, the time limit, a deleted job, and a call
left due by a process that did not send it.

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
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.control import callback_url
from spinbot.control.callback_signing import new_secret, sign, verify
from spinbot.control.callback_url import CallbackPolicy, CallbackRefused, Target, parse_callback_url
from spinbot.control.callbacks import (
    PER_OWNER_ATTEMPTS,
    AttemptLimits,
    CallbackSender,
    post,
)
from spinbot.control.dispatch import Dispatcher
from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.errors import TaskFailed
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import get_settings
from spinbot.tasks.base import Cancelled, NodeOutput
from tests.conftest import require_module
from tests.support.webhook_receiver import Receiver, self_signed

KEY = "key-callbacks-1"
PUBLIC = "93.184.215.14"  # a public address; nothing here connects to it
FINAL_CALLBACK_STATES = ("delivered", "failed", "superseded")


class QuickDispatcher(Dispatcher):
    """Python nodes return at once; `fail` fails infinite_talk with one line, `hold` keeps it running until the job
    is cancelled."""

    def __init__(self, fail: bool = False, hold: bool = False):
        self.fail, self.hold, self.holding = fail, hold, threading.Event()

    def run(self, request, report, is_cancelled):
        if self.fail and request.node_id == "infinite_talk":
            raise TaskFailed("the render broke")
        while self.hold and request.node_id == "infinite_talk":
            self.holding.set()
            if is_cancelled():
                raise Cancelled("cancelled by its user")
            time.sleep(0.02)
        return NodeOutput(values={"audio_duration": 1.0})


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

    def total(self) -> int:
        return self.client.get("/v1/jobs", headers=self.headers()).json()["total"]


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    """start_api(fail=False, **settings): the API with jobs that take no time, keyed, on the test's settings."""
    with ExitStack() as stack:

        def start(fail: bool = False, hold: bool = False, **settings: object) -> Api:
            use_settings(**{"api_keys": KEY, "callback_retry_seconds": 0.2, **settings})
            runner = Runner(dispatcher=QuickDispatcher(fail, hold))
            api = Api(stack.enter_context(TestClient(create_app(runner=runner))), tmp_path)
            api.dispatcher = runner.dispatcher
            return api

        yield start


@pytest.fixture
def dns(monkeypatch) -> dict[str, Callable[[], list[str]]]:
    """Names the test answers for (a function per name, called at each lookup); any other name does not resolve."""
    table: dict[str, Callable[[], list[str]]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]()

    monkeypatch.setattr(callback_url, "system_resolver", resolve)
    return table


# ---- delivery -------------------------------------------------------------------------------------------------------
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
        time.sleep(0.5)
        job = api.job(job_id)
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
        callback = api.settled(second["id"])["callback"]
        time.sleep(0.5)
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


def test_a_job_deleted_before_its_retry_gets_nothing_more(start_api):
    api = start_api(callback_allow_private=True, callback_retry_seconds=1.0)
    with Receiver(answers=[500, 200]) as receiver:
        job_id = api.submit(f"{receiver.url}/hook").json()["id"]
        receiver.wait(1)
        assert api.client.delete(f"/v1/jobs/{job_id}", headers=api.headers()).status_code == 204
        time.sleep(2.0)
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
        time.sleep(0.3)
        assert receiver.received == [] and runner.jobs.get(job_id).callback["state"] == "pending"
        with TestClient(create_app()):  # its start looks for due calls
            (call,) = receiver.wait(1)
    assert json.loads(call.body)["job"]["id"] == job_id
    assert runner.jobs.get(job_id).callback["state"] == "delivered"


# ---- refused at submission -------------------------------------------------------------------------------------------
HOSTILE = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8000/v1/jobs",
    "https://localhost/",
    "http://LOCALHOST./",
    "http://spinbot.localhost/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",  # octal
    "http://127.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[::7f00:1]/",  # IPv4-compatible
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space
    "http://[64:ff9b:1:7f00:0:100:5db8:d70e]/",  # local-use NAT64 (/48: 127.0.0.1 in bits 48-87), a public last 32
    "http://[64:ff9b:1::a00:1]/",
    "http://[x]/",  # urlsplit's own check of a bracketed host raised ValueError: a 500
    "http://[::1x]/",
    "http://[v1.x]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://metadata.google.internal/computeMetadata/v1/",  # resolves to 169.254.169.254 (the test's DNS)
    "http://private.test/",  # resolves to 10.1.2.3
    "http://both.test/",  # resolves to a public address and to 127.0.0.1
    "http://nowhere.test/",  # does not resolve
    "http://user:pass@example.test/",
    "http://example.test@127.0.0.1/",
    "http://127.0.0.1\\@example.test/",
    "http://127.0.0.1#@example.test/",
    "file:///etc/passwd",
    "gopher://example.test:70/_",
    "ftp://example.test/",
    "javascript:alert(1)",
    "//example.test/hook",
    "http:///hook",
    "http://example.test:0/",
    "http://example.test:65536/",
    "http://example.test:80:80/",
    "http://exa mple.test/",
    "http://exämple.test/",
    "http://example.test/\r\nX-Injected: 1",
    "http://" + "a" * 64 + ".test/",
    "http://example.test/" + "x" * 2100,
]


@pytest.mark.parametrize("url", HOSTILE)
def test_a_hostile_callback_url_is_a_400_and_no_job(start_api, dns, url):
    dns["metadata.google.internal"] = lambda: ["169.254.169.254"]
    dns["private.test"] = lambda: ["10.1.2.3"]
    dns["both.test"] = lambda: [PUBLIC, "127.0.0.1"]
    dns["example.test"] = lambda: [PUBLIC]
    api = start_api()
    api.upload()
    r = api.submit(url)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("callback_url: ") and "\n" not in error
    assert api.total() == 0


def test_a_refusal_names_no_address_and_tells_no_missing_name_from_a_private_one(dns):
    dns["private.test"] = lambda: ["10.1.2.3"]
    policy = CallbackPolicy()
    refusals = []
    for url in ("http://private.test/", "http://nowhere.test/"):
        with pytest.raises(CallbackRefused) as err:
            policy.check(url)
        refusals.append(str(err.value).replace("private", "NAME").replace("nowhere", "NAME"))
    assert refusals == ["callback_url: NAME.test is not a public address"] * 2
    assert "10.1.2.3" not in refusals[0]


def test_public_urls_and_the_allow_settings(start_api, dns):
    dns["hooks.example.test"] = lambda: [PUBLIC]
    dns["hooks.internal"] = lambda: ["10.1.2.3"]
    dns["metadata.test"] = lambda: ["169.254.169.254"]
    assert CallbackPolicy().check("HTTPS://Hooks.Example.Test.:8443/a?b=c#frag").request_url == (
        f"https://{PUBLIC}:8443/a?b=c"
    )
    assert CallbackPolicy(allow_hosts="hooks.internal").check("http://hooks.internal/").address == "10.1.2.3"
    assert CallbackPolicy(allow_hosts="10.0.0.0/8").check("http://10.9.8.7/").address == "10.9.8.7"
    private = CallbackPolicy(allow_private=True)
    assert private.check("http://[::1]:9000/").request_url == "http://[::1]:9000/"
    for refused in ("http://metadata.test/", "http://169.254.169.254/", "http://0.0.0.0/", "http://224.0.0.1/"):
        with pytest.raises(CallbackRefused):  # link-local only where an allow-list entry names it; never these two
            private.check(refused)
    api = start_api()
    r = api.submit("https://hooks.example.test/spinbot", callback_secret="whsec_" + "A" * 40)
    assert r.status_code == 201 and r.json()["callback_secret"] is None  # the client's own is not sent back
    assert r.json()["callback"]["url_host"] == "hooks.example.test"


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("http://example.test/", "whsec_" + "A" * 8, "callback_secret: must be whsec_"),
        ("http://example.test/", "not-a-secret", "callback_secret: must be whsec_"),
        (None, new_secret(), "callback_secret: given without a callback_url"),
    ],
)
def test_a_bad_callback_secret_is_a_400(start_api, dns, url, secret, message):
    dns["example.test"] = lambda: [PUBLIC]
    api = start_api()
    r = api.submit(url, callback_secret=secret)
    assert r.status_code == 400 and r.json()["error"].startswith(message)
    assert api.total() == 0


def test_an_allow_list_entry_that_is_no_host_is_a_settings_error(use_settings):
    from spinbot.errors import SettingsError

    use_settings(callback_allow_hosts="hooks.internal,not a host")
    with pytest.raises(SettingsError, match="SPINBOT_CALLBACK_ALLOW_HOSTS"):
        get_settings()


def test_one_keys_names_that_never_resolve_hold_up_no_other_keys_submission(start_api, dns):
    """A name whose DNS never answers holds its lookup's thread past the time limit: a shared pool of 4 that one key's
    4 such names held refused every other key's callback names until they gave up."""
    release, other = threading.Event(), "key-callbacks-2"
    dns["hooks.example.test"] = lambda: [PUBLIC]
    for i in range(6):
        dns[f"slow{i}.attacker.test"] = lambda: [PUBLIC] if release.wait(30) else []
    api = start_api(api_keys=f"{KEY},{other}", callback_connect_timeout=0.5)
    attacker = Api(api.client, api.tmp)
    attacker.headers = lambda: {"Authorization": f"Bearer {other}"}  # type: ignore[method-assign]
    try:
        for i in range(4):  # each gives up after the time limit; its lookup goes on
            r = attacker.submit(f"http://slow{i}.attacker.test/")
            assert r.status_code == 400 and r.json()["error"].endswith("is not a public address"), r.text
        started = time.monotonic()
        r = api.submit("https://hooks.example.test/spinbot")  # another key's: looked up as usual
        assert r.status_code == 201, r.text
        r = attacker.submit("http://slow4.attacker.test/")  # that key's fifth: refused at once
        assert r.status_code == 400 and "still being looked up" in r.json()["error"], r.text
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while callback_url._lookups_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert attacker.submit("http://slow5.attacker.test/").status_code == 201  # its lookups done: its turn again


# ---- DNS rebinding, time limits -----------------------------------------------------------------------------------
def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_at_delivery(start_api, dns):
    answers = iter([[PUBLIC]])  # the submission's lookup; every later one: loopback
    dns["rebind.test"] = lambda: next(answers, ["127.0.0.1"])
    api = start_api()
    with Receiver() as receiver:
        created = api.submit(f"http://rebind.test:{receiver.port}/hook")
        assert created.status_code == 201
        job = api.settled(created.json()["id"])
    assert receiver.received == []
    assert job["callback"]["state"] == "failed" and job["callback"]["attempts"] == 1
    assert job["callback"]["last_error"] == f"rebind.test:{receiver.port} is not a public address"


def test_the_request_goes_to_the_address_checked_with_the_name_in_its_host_header(dns, monkeypatch):
    """One lookup per attempt: had the HTTP client looked the name up again, it would have got an address where
    nothing answers (the system's resolver is made to say so)."""
    lookups = []
    dns["hooks.test"] = lambda: lookups.append(1) or ["127.0.0.1"]
    real_getaddrinfo = socket.getaddrinfo

    def elsewhere(host, *args, **kwargs):
        return real_getaddrinfo("192.0.2.1" if host == "hooks.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", elsewhere)
    policy = CallbackPolicy(allow_hosts="hooks.test")
    with Receiver() as receiver:
        target = policy.check(f"http://hooks.test:{receiver.port}/hook?x=1")
        outcome = anyio.run(post, target, {"webhook-id": "evt_1"}, b"{}", AttemptLimits(2.0, 3.0), True)
        (call,) = receiver.wait(1)
    assert outcome.status == 200 and outcome.error is None and lookups == [1]
    assert call.headers["host"] == f"hooks.test:{receiver.port}" and call.path == "/hook?x=1"


def test_https_goes_to_the_checked_address_with_the_name_in_sni_and_the_certificate_check(dns, tmp_path):
    require_module("cryptography")
    dns["hooks.test"] = dns["other.test"] = lambda: ["127.0.0.1"]
    server_tls, client_tls = self_signed(tmp_path, "hooks.test")
    policy = CallbackPolicy(allow_hosts="hooks.test,other.test")
    with Receiver(tls=server_tls) as receiver:
        target = policy.check(f"https://hooks.test:{receiver.port}/hook")
        assert target.request_url == f"https://127.0.0.1:{receiver.port}/hook"
        outcome = anyio.run(post, target, {}, b"{}", AttemptLimits(2.0, 5.0), client_tls)
        (call,) = receiver.wait(1)
        # the same address under a name the certificate is not for: the handshake fails, nothing is sent
        wrong = policy.check(f"https://other.test:{receiver.port}/hook")
        refused = anyio.run(post, wrong, {}, b"{}", AttemptLimits(2.0, 5.0), client_tls)
    assert outcome.status == 200 and call.headers["host"] == f"hooks.test:{receiver.port}"
    assert receiver.server_names[0] == "hooks.test"
    assert refused.status is None and refused.error == "could not connect" and len(receiver.received) == 1


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
    assert 1.4 < elapsed < 3.0


def test_the_lookups_time_counts_in_the_attempts_total_limit():
    """SPINBOT_CALLBACK_TIMEOUT bounds the whole attempt: a lookup that used it all leaves the POST no time."""
    with Receiver() as receiver:
        target = Target(parse_callback_url(f"{receiver.url}/hook", 2048), "127.0.0.1")
        spent = AttemptLimits(1.0, 1.5, started=time.monotonic() - 1.5)
        outcome = anyio.run(post, target, {}, b"{}", spent, True)
    assert outcome.error == "no answer within 1.5 s" and outcome.retry and receiver.received == []


def test_a_receiver_that_never_answers_fails_the_attempt_within_the_timeout(start_api):
    api = start_api(callback_allow_private=True, callback_timeout=1, callback_max_attempts=1)
    with Receiver(delay=4.0) as receiver:
        job_id = api.submit(f"{receiver.url}/hook").json()["id"]
        (call,) = receiver.wait(1)
        job = api.settled(job_id, timeout=10)
        settled_after = time.monotonic() - call.at
    assert settled_after < 3.0
    assert job["callback"]["state"] == "failed" and job["callback"]["last_error"] == "no answer within 1 s"


# ---- signatures ------------------------------------------------------------------------------------------------------
def test_signatures_follow_the_standard_webhooks_scheme():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type":"job.succeeded"}'
    expected = hmac.new(b"k" * 32, b"evt_1.1700000000." + body, hashlib.sha256).digest()
    signature = sign(secret, "evt_1", 1700000000, body)
    assert signature == "v1," + base64.b64encode(expected).decode()
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": f"v1,bm9wZQ== {signature}",
    }
    assert verify(secret, headers, body, now=1700000100)
    assert not verify(secret, headers, body, now=1700000000 + 301)  # too old: a replay
    assert not verify(secret, {**headers, "webhook-id": "evt_2"}, body, now=1700000000)
    assert not verify(secret, {**headers, "webhook-timestamp": "1700000001"}, body, now=1700000000)
    assert not verify(secret, {"webhook-id": "evt_1"}, body)


def test_the_readmes_verify_function_verifies_a_signed_call():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("def verify(secret: str, headers, body: bytes)", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec("import base64, hashlib, hmac, time\ndef verify(secret: str, headers, body: bytes)" + code, namespace)
    secret, body, stamp = new_secret(), b'{"type":"job.failed"}', int(time.time())
    headers = {"webhook-id": "evt_9", "webhook-timestamp": str(stamp)}
    headers["webhook-signature"] = sign(secret, "evt_9", stamp, body)
    assert namespace["verify"](secret, headers, body)
    assert not namespace["verify"](secret, headers, body + b" ")


def test_one_keys_slow_calls_hold_at_most_its_share_of_the_sender_threads(spinbot_env, monkeypatch):
    """A key whose receivers hang (or that ends many jobs at once) had every sender thread: other keys' calls waited
    behind it for as long as its attempts lasted. Now it runs PER_OWNER_ATTEMPTS at once and parks the rest."""
    sender = CallbackSender(Runner(dispatcher=QuickDispatcher()).jobs, get_settings(), lambda job: {})
    owners = {"slow-1": "slow", "slow-2": "slow", "slow-3": "slow", "other": "other"}
    release, started, done = threading.Event(), [], []

    def attempt(job_id: str) -> None:
        started.append(job_id)
        if owners[job_id] == "slow":
            release.wait(20)
        done.append(job_id)

    monkeypatch.setattr(sender, "attempt", attempt)
    monkeypatch.setattr(sender, "_owner", owners.__getitem__)
    try:
        for job_id in owners:
            sender.schedule(job_id)
        sender.schedule("other")  # a sweep that finds it due again while it is queued: not a second attempt
        deadline = time.monotonic() + 10
        while "other" not in done:
            assert time.monotonic() < deadline, f"the other key's call waited: {started}"
            time.sleep(0.02)
        time.sleep(0.3)  # room for a third slow attempt to start, were it allowed
        slow_running = [job_id for job_id in started if owners[job_id] == "slow"]  # whichever thread came first
        assert PER_OWNER_ATTEMPTS == 2 and len(slow_running) == 2 and "other" in started and len(started) == 3
        release.set()
        while len(done) < 4:
            assert time.monotonic() < deadline + 10, f"a parked call was never sent: {done}"
            time.sleep(0.02)
        assert started[-1] not in slow_running and sorted(done) == sorted(owners)  # the parked one, once released
    finally:
        release.set()
        sender.close()
