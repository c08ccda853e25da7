"""Webhook secrets and signatures, as the Standard Webhooks spec has them (spinbot.control.callbacks sends them).

`webhook-signature` is `v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the
job's secret: `whsec_` and the base64 of the key's bytes, made here or the client's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from spinbot.errors import InputError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_BYTES_RANGE = (24, 64)  # a client's own secret: the Standard Webhooks spec's bounds
TIMESTAMP_TOLERANCE_SECONDS = 300  # what `verify` accepts, as the spec advises receivers


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def check_secret(secret: str) -> str:
    """A client's own secret: `whsec_` and the base64 of 24 to 64 random bytes; InputError otherwise."""
    low, high = SECRET_BYTES_RANGE
    try:
        size = len(secret_key(secret)) if secret.startswith(SECRET_PREFIX) else 0
    except (binascii.Error, ValueError):
        size = 0
    if not low <= size <= high:
        raise InputError(f"callback_secret: must be {SECRET_PREFIX} and the base64 of {low} to {high} random bytes")
    return secret


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does (the README has it for any language): the signature over the id, the timestamp and the
    raw body, compared in constant time, and a timestamp within 5 minutes of now."""
    try:
        event_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        given = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > TIMESTAMP_TOLERANCE_SECONDS:
        return False
    expected = sign(secret, event_id, stamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in given)
