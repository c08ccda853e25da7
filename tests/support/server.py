"""A real uvicorn with `spinbot serve`'s protocol options on a free loopback port, for tests that speak raw HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from spinbot.api.limits import server_options


@contextmanager
def serving(app: Any, timeout_s: float, max_connections: int, send_timeout_s: float = 60.0) -> Iterator[int]:
    """The app served in a thread until the block ends; yields its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = server_options(timeout_s, max_connections, send_timeout_s)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
