"""Idempotency-Key on POST /v1/jobs (as Stripe's API and the IETF httpapi draft have it): a client that lost the
answer to its request sends it again with the same key and gets the job the first one created (200, with
`Idempotent-Replayed: true`) instead of a second render. A key is scoped to its API key (owner), stored on the job
with the SHA-256 of the request (spinbot.state.idempotency), and lives as long as the job: once the job is deleted
(by its owner or the retention) the key names nothing and makes a new job."""

from __future__ import annotations

import hashlib
import hmac
import json

from spinbot.api.errors import InvalidField
from spinbot.api.schemas import JobCreate
from spinbot.errors import InputError, echo
from spinbot.state.idempotency import KeyedJob
from spinbot.state.models import MAX_IDEMPOTENCY_KEY_CHARS

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
DIGEST_VERSION = 1  # in the digest: a change of what it covers makes old keys' requests differ, never match wrongly


class KeyReused(InvalidField):
    """An Idempotency-Key sent again with another request than the one that created its job (422)."""


def checked_key(value: str | None) -> str | None:
    """The header's value: 1 to 255 printable ASCII characters (a 400 otherwise); None without the header."""
    if value is None:
        return None
    if not value:
        raise InputError(f"{HEADER}: empty; send 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters")
    if len(value) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InputError(f"{HEADER}: {len(value):,} characters, more than {MAX_IDEMPOTENCY_KEY_CHARS}")
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        raise InputError(f"{HEADER}: {bad!a} is not a printable ASCII character (a UUID makes a good key)")
    return value


def request_digest(body: JobCreate) -> str:
    """SHA-256 of the request as the API read it: the JSON body with its defaults filled in, keys sorted (field
    order, whitespace and an omitted default do not matter), and the upload ids it names."""
    canonical = {"version": DIGEST_VERSION, "body": body.model_dump(mode="json"), "uploads": [body.image, body.voice]}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def replayed_job(keyed: KeyedJob, key: str, digest: str) -> str:
    """The id of the job to answer for a repeat of its request; KeyReused where the request is another one."""
    if keyed.digest is None or not hmac.compare_digest(keyed.digest, digest):
        raise KeyReused(
            f"{HEADER} {echo(key)} was already used for another request (job '{keyed.job_id}'): "
            "send that request again unchanged, or use a new key for this one"
        )
    return keyed.job_id
