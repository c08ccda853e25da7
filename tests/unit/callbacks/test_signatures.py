"""Webhook secrets and signatures: the Standard Webhooks scheme, the README's verify function, a bad secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest

from spinbot.control.callback_signing import new_secret, sign, verify
from tests.support.callback_api import PUBLIC


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
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    code = readme.split("def verify(secret: str, headers, body: bytes)", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec("import base64, hashlib, hmac, time\ndef verify(secret: str, headers, body: bytes)" + code, namespace)
    secret, body, stamp = new_secret(), b'{"type":"job.failed"}', int(time.time())
    headers = {"webhook-id": "evt_9", "webhook-timestamp": str(stamp)}
    headers["webhook-signature"] = sign(secret, "evt_9", stamp, body)
    assert namespace["verify"](secret, headers, body)
    assert not namespace["verify"](secret, headers, body + b" ")


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
