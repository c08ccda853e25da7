"""Who may call what. API keys (SPINBOT_API_KEYS) travel in a header only; a key sees only its own jobs and uploads
(the owner is a hash of the key). Elements that load by URL (EventSource, <video>, <audio>) cannot send a header,
so every answer to a header-authenticated call refreshes a short-lived media cookie, signed with the key, that the
event and artifact routes also accept: the key itself never appears in a URL, and so never in an access log.

Routes without a key: the page and its files, /healthz and /readyz (probes; no user data), /docs and
/openapi.json (the API's own description). /metrics takes an API key or SPINBOT_METRICS_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import Request

from spinbot.errors import SpinBotError

MEDIA_COOKIE = "spinbot_media"
_HEADER_HINT = "send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


class Unauthorized(SpinBotError):
    pass


class Forbidden(SpinBotError):
    """A known key asking for what its key may not do (403)."""


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _keys(request: Request) -> list[str]:
    return request.app.state.settings.api_key_list


def _header_key(request: Request) -> str:
    """The one key the request's headers carry ("" for none). Two different ones (X-API-Key and a Bearer token, or a
    header twice) are refused: the first X-API-Key won and the rest were ignored, so a proxy or log that went by
    the Authorization header saw another caller than the one the API served."""
    given = {value.strip() for value in request.headers.getlist("x-api-key")}
    given |= {
        auth[7:].strip() for auth in request.headers.getlist("authorization") if auth.lower().startswith("bearer ")
    }
    given.discard("")
    if len(given) > 1:
        raise Unauthorized(f"the request carries {len(given)} different API keys; {_HEADER_HINT}, once")
    return given.pop() if given else ""


def _matching_key(given: str, keys: list[str]) -> str | None:
    # Digests of equal length are compared: compare_digest returns at once on values of different lengths, which
    # told a caller how long the keys are. Every key is compared, so the time taken does not tell which one matched.
    digest = hashlib.sha256(given.encode()).digest()
    found = None
    for key in keys:
        if given and hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest()):
            found = key
    return found


def _refuse(request: Request) -> Unauthorized:
    if "api_key" in request.query_params:
        return Unauthorized(f"API keys are not accepted in the URL (URLs end up in logs); {_HEADER_HINT}")
    return Unauthorized(f"missing or unknown API key ({_HEADER_HINT})")


async def current_owner(request: Request) -> str | None:
    """The caller's owner id from the key in its header; None when the API runs without keys (loopback only)."""
    keys = _keys(request)
    if not keys:
        return None
    key = _matching_key(_header_key(request), keys)
    if key is None:
        raise _refuse(request)
    _renew_media_cookie(request, key)
    return owner_of(key)


async def media_owner(request: Request) -> str | None:
    """current_owner, or the owner a valid media cookie names: for the routes that elements load by URL."""
    keys = _keys(request)
    if not keys:
        return None
    if _header_key(request):
        return await current_owner(request)
    owner = verify_media_token(request.cookies.get(MEDIA_COOKIE, ""), keys)
    if owner is None:
        raise _refuse(request)
    return owner


async def may_set_priority(request: Request) -> bool:
    """Whether the caller's key is one of SPINBOT_PRIORITY_API_KEYS (compared as the keys are: in constant time);
    True without API keys (loopback only: one local user, whose jobs are all their own)."""
    settings = request.app.state.settings
    if not settings.api_key_list:
        return True
    return _matching_key(_header_key(request), settings.priority_api_key_list) is not None


async def metrics_access(request: Request) -> None:
    """An API key or SPINBOT_METRICS_KEY (a scraper's bearer token); open only where the API has no keys."""
    settings = request.app.state.settings
    allowed = settings.api_key_list + ([settings.metrics_key] if settings.metrics_key else [])
    if allowed and _matching_key(_header_key(request), allowed) is None:
        raise Unauthorized(f"/metrics needs an API key or the metrics key ({_HEADER_HINT})")


# ---- the media cookie -----------------------------------------------------------------------------------------
def media_token(key: str, expires: int) -> str:
    """owner.expiry.signature; the HMAC is keyed by the API key, so a token dies with its key."""
    owner = owner_of(key)
    mac = hmac.new(key.encode(), f"media:{owner}:{expires}".encode(), hashlib.sha256).digest()
    return f"{owner}.{expires}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def verify_media_token(token: str, keys: list[str], now: float | None = None) -> str | None:
    """The owner the token names, if it is unexpired and signed by one of the keys; else None."""
    match = re.fullmatch(r"([0-9a-f]{32})\.(\d{1,12})\.([A-Za-z0-9_-]{43})", token or "")
    if match is None or int(match[2]) < (now or time.time()):
        return None
    for key in keys:
        if owner_of(key) == match[1] and hmac.compare_digest(media_token(key, int(match[2])), token):
            return match[1]
    return None


def _renew_media_cookie(request: Request, key: str) -> None:
    """Ask for a fresh cookie (set by MediaCookie below) unless the one sent still has most of its life."""
    lifetime = request.app.state.settings.media_cookie_seconds
    sent = request.cookies.get(MEDIA_COOKIE, "")
    remaining = int(sent.split(".")[1]) - time.time() if verify_media_token(sent, [key]) else 0
    if remaining < lifetime / 2:
        expires = int(time.time()) + lifetime
        request.state.media_cookie = (media_token(key, expires), lifetime)


def media_cookie_header(scope: MutableMapping[str, Any]) -> bytes | None:
    """The Set-Cookie value a request asked for, if any (HttpOnly: no script reads it; SameSite=Strict: no other
    site's page sends it)."""
    wanted = scope.get("state", {}).get("media_cookie")
    if not wanted:
        return None
    token, lifetime = wanted
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    return f"{MEDIA_COOKIE}={token}; Max-Age={lifetime}; Path=/v1/; HttpOnly; SameSite=Strict{secure}".encode()


# ---- keys out of logs -----------------------------------------------------------------------------------------
_SECRET_QUERY = re.compile(r"((?:api_key|key|token)=)[^&\s\"]+", re.IGNORECASE)


class RedactQuerySecrets(logging.Filter):
    """uvicorn's access log writes the path with its query: a key a client put there is masked before it is
    written (the API refuses such requests anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuerySecrets) for f in access.filters):
        access.addFilter(RedactQuerySecrets())
