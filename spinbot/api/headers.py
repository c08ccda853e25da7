"""Headers on every answer, in one pure ASGI middleware (no per-request task, so open event streams cost nothing):
security headers (a Content-Security-Policy per kind of route, nosniff, no framing), `Cache-Control: no-store` on
the API's answers (a key's jobs and files, and the media cookie, kept by no cache), the media cookie a keyed call
asked for (spinbot.api.auth), and `Connection: close` on an answer given before its request's body was read (a
refused upload), so the server stops receiving it instead of draining a body it has refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from spinbot.api.auth import media_cookie_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# The page: its own scripts and styles only (no inline code), previews of picked files (blob:), nothing framed.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI, served from the package's files; FastAPI's docs page starts it with an inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# JSON, events and files: nothing in them may run or load anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'"

_ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
# A key's jobs, files and media cookie: without a Cache-Control, a shared cache may keep an answer that carries a
# Last-Modified (a file) and give it to anyone who asks for its URL (RFC 9111 section 4.2.2; a request authenticated
# by the cookie, not an Authorization header, does not stop it), and a browser keeps it on disk after the key is gone.
PRIVATE_PREFIXES = ("/v1/", "/metrics")


def _csp(path: str) -> bytes:
    if path == "/" or path.startswith("/web/"):
        return PAGE_CSP.encode()
    if path.startswith(("/docs", "/redoc")):
        return DOCS_CSP.encode()
    return API_CSP.encode()


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    return headers.get(b"content-length", b"0") not in (b"", b"0") or b"transfer-encoding" in headers


class ResponseHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = not _has_body(scope)

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _ALWAYS if n not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", _csp(scope["path"])))
                if b"cache-control" not in names and scope["path"].startswith(PRIVATE_PREFIXES):
                    headers.append((b"cache-control", b"no-store"))
                cookie = media_cookie_header(scope)
                if cookie:
                    headers.append((b"set-cookie", cookie))
                if not body_done:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, tracking_receive, send_with_headers)
