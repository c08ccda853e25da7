"""API keys from SPINBOT_API_KEYS. A key sees only its own jobs and uploads: the owner is a hash of the key."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from spinbot.errors import SpinBotError


class Unauthorized(SpinBotError):
    pass


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def current_owner(request: Request) -> str | None:
    """The caller's owner id; None when the API runs without keys (loopback only)."""
    keys: list[str] = request.app.state.settings.api_key_list
    if not keys:
        return None
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        given = request.query_params.get("api_key", "")  # EventSource and <video> cannot send headers
    for key in keys:
        if given and hmac.compare_digest(given, key):
            return owner_of(key)
    raise Unauthorized("missing or unknown API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")
