"""Second attacker round (2026-12-05): clients that never read what they asked for, against the connection cap and the
server's memory. Each test fails on the code before its fix."""

from __future__ import annotations

import socket
import time

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from tests.support.server import serving

KEY = "key-slow-reader-1"
SEND_TIMEOUT_S = 1.0
CONNECTIONS = 4


def stalled_request(port: int, path: str) -> socket.socket:
    """A request whose client then reads nothing, with a small receive window."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    conn.settimeout(10)
    conn.connect(("127.0.0.1", port))
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    return conn


def status_of(port: int, path: str = "/healthz") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return int(conn.recv(64).split()[1])


def test_clients_that_never_read_their_answers_do_not_keep_the_servers_connections(spinbot_env, use_settings):
    """An answer abandoned after SPINBOT_API_SEND_TIMEOUT (or one small enough to be written whole at once) was left
    in the connection's write buffer, and uvicorn's close waits for that buffer to drain: a client that never read
    kept its connection, one of SPINBOT_API_MAX_CONNECTIONS, and the bytes (72 KiB of a download; what the kernel did
    not take of a live segment read whole from S3: megabytes), for as long as it stayed connected: a few sockets that
    read nothing made every other client a 503 for good. Now a closing connection whose client takes nothing more
    within the send timeout is dropped."""
    use_settings(api_keys=KEY, api_send_timeout=SEND_TIMEOUT_S)
    app = create_app()
    runner = app.state.services.runner
    job_id, key = runner.jobs.new_id(), "uploads/o/1/portrait.png"
    runner.artifacts.put_bytes(key, b"\0" * (16 * 1024 * 1024))  # far more than a loopback socket buffers
    runner.jobs.create_job(job_id, "f5tts_infinitetalk", [], {"artifacts": {"source_image": key}}, {}, owner_of(KEY))
    with serving(app, 30.0, CONNECTIONS, SEND_TIMEOUT_S) as port:
        assert status_of(port) == 200
        stalled = [stalled_request(port, f"/v1/jobs/{job_id}/inputs/source_image") for _ in range(CONNECTIONS - 1)]
        time.sleep(SEND_TIMEOUT_S + 0.5)
        assert status_of(port) == 503  # the cap: every connection held (the check of the test itself)
        deadline = time.monotonic() + 5 + 2 * SEND_TIMEOUT_S + 5  # uvicorn's keep-alive, the send timeout, slack
        while (status := status_of(port)) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == 200, "the stalled clients still hold the server's connections"
        for conn in stalled:
            conn.close()
