"""Bounds on what one client can make the API server hold: the size of a request body, how long a request may take
to arrive, how many connections are open.

- `RequestBodyLimit` (ASGI middleware): a body over SPINBOT_MAX_REQUEST_BYTES is a 413 before FastAPI reads and
  parses it (FastAPI reads a JSON body, on the event loop, before the route's key check: a 300 MB body without a key
  took 1.4 GB and stalled every other request for a second). A declared length is refused before one byte is read; a
  chunked body is cut once past the limit. Such a body must arrive whole within SPINBOT_API_REQUEST_TIMEOUT (a 408
  past it): a bound on pauses alone let a client without a key send a byte every 29 s and hold its connection for
  days. Uploads read their own body against SPINBOT_MAX_UPLOAD_BYTES (upload_body.py), after the key check, and get
  the pause bound only (50 MB may take minutes on a slow link).
- `TimedH11Protocol` (uvicorn's h11 protocol with one timer added): a request head must arrive within
  SPINBOT_API_REQUEST_TIMEOUT of the connection's opening (the first request) or of its own first byte (a kept-alive
  connection's next one), or the connection is closed. uvicorn bounds idle keep-alive connections only, so a client
  sending a header a byte a minute, or nothing at all, held a connection forever (SPINBOT_API_MAX_CONNECTIONS silent
  sockets: every other client a 503). h11 bounds the head's size (HEADER_BYTES); httptools, uvicorn's other parser,
  accepted 20 MB headers.
- The connection count: uvicorn's `limit_concurrency` (SPINBOT_API_MAX_CONNECTIONS), a JSON 503 past it.
- `SlowReaderLimit` (ASGI middleware): every write of an answer must be taken by the client within
  SPINBOT_API_SEND_TIMEOUT, or the answer ends and its connection is closed. uvicorn waits for a full socket buffer
  to drain with no time limit, so a keyed client that stopped reading a download (or a live segment) held its
  connection, one of SPINBOT_API_MAX_CONNECTIONS, for as long as it stayed connected. Event streams bound their own
  writes the same way (routes/jobs.py), to give their key's slot back.
- `DroppingTransport` (in `TimedH11Protocol`): a connection closed with bytes still to write (an answer abandoned
  above, or one written whole at once: a live segment read from S3) is dropped once its client takes none of them
  for SPINBOT_API_SEND_TIMEOUT. asyncio's close waits for the write buffer to drain without end, and uvicorn counts
  the connection until it has: a few sockets that read nothing held the connection cap (every other client a 503)
  and the bytes for as long as they stayed connected.

Written here because neither uvicorn nor Starlette has a body-size limit, a request-head timeout or a write timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import h11
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER_BYTES = 64 * 1024  # a request's head: the API key, the media cookie and a browser's usual headers fit many times
OWN_BODY_LIMIT = ("/v1/uploads",)  # routes that bound their body themselves


# HTTPExceptions: FastAPI passes them on from its body parsing (any other error there becomes a 400), and the
# API's handler answers them as JSON errors
class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body over {max_bytes:,} bytes (SPINBOT_MAX_REQUEST_BYTES)")


class BodyTimeout(HTTPException):
    def __init__(self, timeout_s: float, whole: bool = False):
        what = "took over" if whole else "paused over"
        super().__init__(408, f"the request body {what} {timeout_s:g} s (SPINBOT_API_REQUEST_TIMEOUT)")


class RequestBodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = not scope["path"].startswith(OWN_BODY_LIMIT)
        declared = _content_length(scope)
        if limited and declared is not None and declared > self.max_bytes:
            await _answer(send, BodyTooLarge(self.max_bytes))
            return
        received, body_done = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout_s  # for the whole of a limited body

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for the client to leave (event streams) has no time limit
                return await receive()
            left = deadline - asyncio.get_running_loop().time() if limited else self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(min(left, self.timeout_s), 0))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s, whole=limited) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if limited and received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, bounded_receive, send)


class StalledClient(Exception):
    """A write of an answer was not taken by its client within the time allowed."""


def bounded_send(send: Send, seconds: float) -> Send:
    """`send` with every write bounded by `seconds`: StalledClient past it (the write abandoned)."""

    async def bounded(message: Message) -> None:
        with anyio.move_on_after(seconds) as scope:
            await send(message)
        if scope.cancelled_caught:
            raise StalledClient

    return bounded


class SlowReaderLimit:
    """Ends an answer whose client takes none of a write for `timeout_s` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, bounded_send(send, self.timeout_s))
        except* StalledClient:  # grouped by the task group of a streamed answer, or bare
            log.warning(
                "an answer ended: its client took nothing for the send timeout",
                extra={"path": scope["path"], "seconds": self.timeout_s},
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _head_size(request: h11.Request) -> int:
    """The request line and header lines' bytes, as sent (give or take the spaces around header values)."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


async def _answer(send: Send, err: HTTPException, close: bool = False) -> None:
    """A JSON error answered before the body was read (inside the app, ResponseHeaders adds `Connection: close`, so
    the server stops receiving it; outside it, `close` says so)."""
    body = json.dumps({"error": err.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DroppingTransport:
    """A connection's transport whose close() drops the connection (abort) where the client takes none of what is
    left to write within `seconds` (see the module's docstring); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, seconds: float):
        self._transport, self._loop, self._seconds = transport, loop, seconds
        self._watched = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._transport.close()
        if not self._watched:
            self._watched = True
            self._watch(None)

    def _watch(self, before: int | None) -> None:
        left = self._transport.get_write_buffer_size()  # 0 once written, and once the connection is gone
        if not left:
            return
        if left == before:
            log.warning("a connection dropped: its client took nothing", extra={"unsent_bytes": left})
            self._transport.abort()
            return
        self._loop.call_later(self._seconds, self._watch, left)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than `head_timeout_s` from its
    first byte (the first request's or a kept-alive connection's next one), bounding each request head to
    HEADER_BYTES, and answering past the connection cap (uvicorn's `limit_concurrency`) with the API's JSON 503
    instead of uvicorn's text. Heads and the cap are judged as h11 hands over each request, where uvicorn judges its
    cap: a request pipelined behind another is judged like the first."""

    head_timeout_s: float = 30.0
    send_timeout_s: float = 60.0
    _head_timer: asyncio.TimerHandle | None = None
    _head_refused = False  # the last request's head was over HEADER_BYTES
    _over_cap = False  # the last request came in with the connections or requests at the cap

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._cap, self.limit_concurrency = self.limit_concurrency, None  # judged in _next_event instead
        self._h11_next_event = self.conn.next_event
        self.conn.next_event = self._next_event  # type: ignore[method-assign]  # uvicorn keeps one h11 connection
        if self._cap is not None:
            self.app = self._capped(self.app)

    def _next_event(self) -> Any:
        """h11's next event; a request whose head is over HEADER_BYTES is a protocol error (h11 bounds only a head it
        has not yet seen whole: one that arrives in a single read, or pipelined behind another, passed whole)."""
        event = self._h11_next_event()
        if isinstance(event, h11.Request):
            if _head_size(event) > HEADER_BYTES:
                self._head_refused = True
                raise h11.RemoteProtocolError(f"request head over {HEADER_BYTES} bytes")
            # uvicorn's test, at uvicorn's moment: before this request's task exists
            cap = self._cap
            self._over_cap = cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap)
        return event

    def _capped(self, app: Any) -> Any:
        async def capped(scope: Scope, receive: Receive, send: Send) -> None:
            if self._over_cap:  # read at the task's start: h11 hands over no next request before this one ends
                self.logger.warning("Exceeded concurrency limit.")
                error = HTTPException(503, f"the server has SPINBOT_API_MAX_CONNECTIONS ({self._cap}) open")
                await _answer(send, error, close=True)
                return
            await app(scope, receive, send)

        return capped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
        super().connection_made(transport)
        self.transport = DroppingTransport(transport, self.loop, self.send_timeout_s)  # type: ignore[assignment]
        # timed from the opening: a connection that never sends a byte would hold its place without end
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse (bad syntax, a head over HEADER_BYTES), as the API's JSON
        error rather than uvicorn's plain text; the connection is closed after it, as uvicorn does. A malformed body
        arriving while an answer is under way (the app answered early) only closes it: no error inside that answer."""
        if self.conn.our_state is h11.SEND_BODY:
            self.transport.close()
        elif self._head_refused:
            self._send_json_error(
                431, "Request Header Fields Too Large", f"the request head is over {HEADER_BYTES:,} bytes"
            )
        else:
            reason = f"invalid HTTP request: bad syntax, or a request head over {HEADER_BYTES:,} bytes"
            self._send_json_error(400, "Bad Request", reason)

    def _send_json_error(self, status: int, reason: str, message: str) -> None:
        """A JSON error, then the connection closed. Written as bytes: h11 sends no response to a request it has not
        parsed (a head refused for its size)."""
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.warning(
                "closing a connection whose request head took too long", extra={"timeout_s": self.head_timeout_s}
            )
            self.transport.close()


def protocol_with_timeout(head_timeout_s: float, send_timeout_s: float) -> type[TimedH11Protocol]:
    timeouts = {"head_timeout_s": head_timeout_s, "send_timeout_s": send_timeout_s}
    return type("TimedH11Protocol", (TimedH11Protocol,), timeouts)


def run_server(app: Any, host: str, port: int, timeout_s: float, max_connections: int, send_timeout_s: float) -> None:
    """uvicorn with the bounds above."""
    import uvicorn

    options = server_options(timeout_s, max_connections, send_timeout_s)
    uvicorn.run(app, **options, host=host, port=port, log_config=None)


def server_options(timeout_s: float, max_connections: int, send_timeout_s: float = 60.0) -> dict[str, Any]:
    return {
        "http": protocol_with_timeout(timeout_s, send_timeout_s),
        "h11_max_incomplete_event_size": HEADER_BYTES,
        "limit_concurrency": max_connections,
    }
