"""A local HTTP server that speaks Ollama's /api/generate and /api/chat wire format, or misbehaves on purpose."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.support.quiet_server import QuietHTTPServer


class FakeOllama:
    """mode: "ok" (a script), "hang" (never answers in time), "garbage" (not JSON), "empty" (empty response),
    "trickle" (a whole answer's headers, then its body one byte every `trickle_s`: each read gets a byte in time),
    "no_model" (Ollama's 404 for a model it does not have)."""

    def __init__(
        self,
        mode: str = "ok",
        text: str = "Hello there. This is a script written by the model.",
        done_reason="stop",
        trickle_s: float = 0.2,
    ):
        self.mode, self.text, self.requests, self.done_reason = mode, text, [], done_reason
        self.trickle_s = trickle_s
        self.release = threading.Event()
        self.bytes_sent = 0  # trickle: the body's bytes written so far
        self.client_left = threading.Event()  # trickle: a write failed, the client having closed the connection
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                owner.requests.append((self.path, body))
                if owner.mode == "hang":
                    owner.release.wait(30)
                    return
                if owner.mode == "no_model":
                    self._answer(404, json.dumps({"error": f"model '{body.get('model')}' not found"}).encode())
                    return
                if owner.mode == "garbage":
                    payload = b"<html>502 bad gateway, definitely not json"
                else:
                    text = "" if owner.mode == "empty" else owner.text
                    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    if self.path == "/api/chat":
                        msg = {
                            "model": body.get("model"),
                            "created_at": now,
                            "message": {"role": "assistant", "content": text},
                            "done": True,
                        }
                    else:
                        msg = {
                            "model": body.get("model"),
                            "created_at": now,
                            "response": text,
                            "done": True,
                            "done_reason": owner.done_reason,
                        }
                    payload = json.dumps(msg).encode()
                if owner.mode == "trickle":  # far more than the test waits for: padded with spaces, valid JSON
                    payload = payload[:1] + b" " * 10_000 + payload[1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if owner.mode == "trickle":
                    self._trickle(payload)
                else:
                    self.wfile.write(payload)

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _trickle(self, payload: bytes) -> None:
                try:
                    for i in range(len(payload)):
                        if owner.release.wait(owner.trickle_s):
                            return
                        self.wfile.write(payload[i : i + 1])
                        owner.bytes_sent += 1
                except OSError:  # BrokenPipeError, ConnectionResetError: the client closed the connection
                    owner.client_left.set()

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
