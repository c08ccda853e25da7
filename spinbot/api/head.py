"""HEAD on every GET route: the status and headers a GET would get, and no body.

FastAPI's @router.get routes answer HEAD with 405, yet curl -I, download managers and media players ask HEAD before
they fetch. One middleware covers every route (the route modules stay GET-only, and /openapi.json unchanged): it
routes a HEAD as a GET and ends the answer after its headers, so a file or a stream stops at its first chunk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HeadAsGet:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        # A copy: the server's own scope keeps HEAD (uvicorn frames the answer and logs the request by it).
        as_get = {**scope, "method": "GET"}
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                scope.setdefault("route", as_get.get("route"))  # the metrics count the answer under its route
                await send(message)
            elif message["type"] == "http.response.body" and not ended:
                # The answer ends here; a file or stream still sending learns it from its next receive(), which
                # then says http.disconnect (ASGI), and stops.
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(as_get, receive, headers_only)
