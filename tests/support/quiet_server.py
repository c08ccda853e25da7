"""ThreadingHTTPServer for the tests' stand-in services, without socketserver's printed errors.

socketserver prints a failed request (a client that left before the answer: a webhook attempt cut at its time
limit) to sys.stderr as it is at that moment, from the request's thread, which can outlive its test: a later test
that captures stderr (typer's CliRunner swaps it) read 40 dashes and a traceback as the command's first output line.
The errors are kept on the server instead.
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer
from typing import Any


class QuietHTTPServer(ThreadingHTTPServer):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.request_errors: list[str] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.request_errors.append(repr(sys.exc_info()[1]))
