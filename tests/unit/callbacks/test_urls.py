"""Which callback URLs a job may name (server-side request forgery): refused at submission, the allow settings, a
key's slow names, DNS rebinding at delivery, and the request going to the address that was checked."""

from __future__ import annotations

import socket
import threading
import time

import anyio
import pytest

from spinbot.control import callback_url
from spinbot.control.callback_url import CallbackPolicy, CallbackRefused
from spinbot.control.callbacks import (
    AttemptLimits,
    post,
)
from spinbot.settings import get_settings
from tests.conftest import require_module
from tests.support.callback_api import KEY, PUBLIC, Api
from tests.support.webhook_receiver import Receiver, self_signed

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
        r = api.submit("https://hooks.example.test/spinbot")  # another key's: looked up as usual (a shared pool
        assert r.status_code == 201, r.text  # held by the 4 would have timed it out: a 400 "not a public address")
        r = attacker.submit("http://slow4.attacker.test/")  # that key's fifth: refused by its count, not timed out
        assert r.status_code == 400 and "still being looked up" in r.json()["error"], r.text
    finally:
        release.set()
    deadline = time.monotonic() + 20
    while callback_url._lookups_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert attacker.submit("http://slow5.attacker.test/").status_code == 201  # its lookups done: its turn again


# ---- DNS rebinding, the checked address -------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    "url, error",
    [
        ("file:///etc/passwd", "only http and https URLs can be called, not 'file' ones"),
        ("gopher://example.test:70/_", "only http and https URLs can be called, not 'gopher' ones"),
        ("//example.test/hook", "only http and https URLs can be called, not one without a scheme"),
        ("http://[::1x]/a/b", "the host in [ ] is no IPv6 address"),
    ],
)
def test_a_refusal_names_the_part_that_is_wrong(start_api, dns, url, error):
    """They quoted the URL, which the API's error text takes out as an address or a server path: the client read
    'not <internal address>', 'not /hook', '<internal address> is no URL with a host[:port]'."""
    api = start_api()
    api.upload()
    r = api.submit(url)
    assert r.status_code == 400 and r.json() == {"error": f"callback_url: {error}"}
