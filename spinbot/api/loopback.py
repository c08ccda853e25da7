"""A server without API keys answers only requests addressed to the loopback by name (the Host header).

Without keys `spinbot serve` listens on loopback only, and anything that reaches it may use it: the jobs, the
portraits and voice samples (a person's face and voice), the videos. A web page the user opens cannot read another
origin's answers, but it can make its own name resolve to 127.0.0.1 after it loaded (DNS rebinding): its requests
are then same-origin, carrying `Host: attacker.example:8000`, and were answered in full. A browser always sends the
name it connected to, so refusing every Host that is not a loopback name or address closes that door; a client on
this machine sends `localhost` or `127.0.0.1` anyway.
"""

from __future__ import annotations

import ipaddress
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from spinbot.api.errors import error
from spinbot.errors import echo

# A Host header as RFC 9110 has it: a name or an address, IPv6 in [ ], then at most a port. Parsed as a URL's authority
# it also took `evil.example@localhost` (userinfo), `localhost?x=evil`, `localhost:evil` and `[::1%25evil]` as the
# loopback: no browser sends those, but a Host the check accepts must be one that names the loopback and nothing else.
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


def loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback: localhost, a name under .localhost (RFC 6761), or a
    loopback address (127.0.0.0/8, [::1]); with any port."""
    found = _HOST.fullmatch(host or "")
    if found is None:
        return False
    name = (found["ipv6"] or found["name"]).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback and (address.version == 6) == bool(found["ipv6"])


class LoopbackHostOnly:
    """Pure ASGI: a request whose Host is not loopback is a JSON 400 before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host")
            if not loopback_host(host):
                message = (
                    f"Host {echo(host or '')} is not this machine's loopback: without API keys (SPINBOT_API_KEYS) "
                    "the server answers only requests to localhost or 127.0.0.1"
                )
                await error(400, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
