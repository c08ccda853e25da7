"""What one client can make the API server hold (spinbot/api/limits.py): request bodies, slow requests, connections.
The server tests run uvicorn on a loopback port with the options `spinbot serve` uses."""

from __future__ import annotations

import json
import socket
import time

import pytest

from spinbot.api.app import create_app
from tests.support.api_client import local_client
from tests.support.server import serving

KEY = "key-a-123"
TIMEOUT_S = 1.0


@pytest.fixture
def client(spinbot_env, use_settings):
    use_settings(api_keys=KEY, max_request_bytes=64 * 1024)
    with local_client(create_app()) as c:
        yield c


def test_a_job_body_over_the_limit_is_a_413_before_it_is_read_or_the_key_checked(client):
    answer = client.post("/v1/jobs", content=b'{"prompt": "' + b"a" * 100_000 + b'"}')
    assert answer.status_code == 413
    assert answer.json() == {"error": "request body over 65,536 bytes (SPINBOT_MAX_REQUEST_BYTES)"}
    assert answer.headers["connection"] == "close" and answer.headers["x-content-type-options"] == "nosniff"


def test_a_body_under_the_limit_reaches_the_route(client):
    answer = client.post("/v1/jobs", json={"image": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 422 and answer.json()["error"] == "voice: Field required"


def test_uploads_keep_their_own_larger_limit(client, tmp_path):
    wav = tmp_path / "v.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 200_000)  # over the request limit, under the upload one; not a real WAV
    with open(wav, "rb") as f:
        answer = client.post(
            "/v1/uploads",
            data={"kind": "voice"},
            files={"file": ("v.wav", f)},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert answer.status_code == 400, answer.text  # judged as a voice, not refused by size


# ---- a real server --------------------------------------------------------------------------------------------------


@pytest.fixture
def server(spinbot_env, use_settings):
    """`spinbot serve`'s uvicorn options with a 1 s request timeout and 8 connections; yields the port."""
    use_settings(api_request_timeout=TIMEOUT_S)
    with serving(create_app(), TIMEOUT_S, 8) as port:
        yield port


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    return conn


def read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_a_request_head_that_never_ends_is_closed_after_the_timeout(server):
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # no blank line: the head never ends
        started = time.monotonic()
        assert read_all(conn) == b""  # closed by the server
        assert TIMEOUT_S * 0.9 <= time.monotonic() - started < TIMEOUT_S + 5


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(server):
    # uvicorn times a head from its first byte only: silent sockets, one per connection the server takes, held every
    # other client at a 503 for as long as they stayed open
    with connect(server) as conn:
        started = time.monotonic()
        assert read_all(conn) == b""  # closed by the server
        assert TIMEOUT_S * 0.9 <= time.monotonic() - started < TIMEOUT_S + 5


def test_silent_connections_do_not_hold_the_server_at_its_connection_cap(server):
    silent = [connect(server) for _ in range(8)]
    try:
        time.sleep(TIMEOUT_S + 0.5)
        with connect(server) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for conn in silent:
            conn.close()


def test_the_next_head_on_a_kept_alive_connection_is_timed_too(server):
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        assert read_all(conn) == b""
        assert time.monotonic() - started < TIMEOUT_S + 5


def test_a_body_that_stops_arriving_is_a_408(server):
    with connect(server) as conn:
        conn.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answer = read_all(conn)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"SPINBOT_API_REQUEST_TIMEOUT" in answer


def test_a_job_body_trickled_in_is_a_408_once_the_timeout_has_passed(server):
    # no pause reaches the timeout, yet the body never ends: a client without a key held its connection for days
    with connect(server) as conn:
        conn.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        started, answer = time.monotonic(), b""
        conn.settimeout(TIMEOUT_S / 4)
        while not answer and time.monotonic() - started < TIMEOUT_S * 10:
            try:
                answer = conn.recv(65536)
            except TimeoutError:
                conn.sendall(b" ")
    assert answer.startswith(b"HTTP/1.1 408") and b"SPINBOT_API_REQUEST_TIMEOUT" in answer
    assert time.monotonic() - started < TIMEOUT_S * 3


def test_a_chunked_job_body_is_cut_once_past_the_limit(server):
    with connect(server) as conn:
        conn.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:  # the server answers and closes long before
                conn.sendall(b"10000\r\n" + b"a" * 65536 + b"\r\n")
                sent += 65536
        except OSError:
            pass
        answer = read_all(conn)
    assert answer.startswith(b"HTTP/1.1 413") and b"SPINBOT_MAX_REQUEST_BYTES" in answer
    assert sent < 16 * 1024 * 1024


def test_a_header_past_the_limit_is_refused(server):
    with connect(server) as conn:
        try:  # a megabyte of header: refused at about HEADER_BYTES, the connection closed (or reset) while it is sent
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 1024 * 1024 + b"\r\n\r\n")
            answer = read_all(conn)
        except ConnectionResetError:
            answer = b"(reset)"
    assert answer.startswith((b"HTTP/1.1 431", b"(reset)"))  # refused once the head passes HEADER_BYTES
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_slow_but_steady_client_is_served(server):
    with connect(server) as conn:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: localhost\r\n", b"\r\n"):
            conn.sendall(part)
            time.sleep(TIMEOUT_S / 4)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")


def test_connections_past_the_limit_get_a_503(server):
    idle = [connect(server) for _ in range(8)]
    try:
        for conn in idle:
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # open, their heads pending
        time.sleep(0.2)
        with connect(server) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = read_all(conn)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503") and b"content-type: application/json" in head.lower()
        assert "SPINBOT_API_MAX_CONNECTIONS" in json.loads(body)["error"]
    finally:
        for conn in idle:
            conn.close()


def test_a_download_its_client_stopped_reading_is_ended_after_the_send_timeout(spinbot_env, use_settings):
    """A keyed client asks for a big file and reads nothing: once the socket's buffers are full the server's write
    waits. Past SPINBOT_API_SEND_TIMEOUT the answer is abandoned and the connection closed; before, it stayed open
    (one of SPINBOT_API_MAX_CONNECTIONS) for as long as the client did."""
    from spinbot.api.auth import owner_of

    use_settings(api_keys=KEY, api_send_timeout=TIMEOUT_S)
    app = create_app()
    runner = app.state.services.runner
    job_id, key, size = runner.jobs.new_id(), "uploads/o/1/portrait.png", 64 * 1024 * 1024
    runner.artifacts.put_bytes(key, b"\0" * size)  # far more than a loopback socket buffers
    inputs = {"artifacts": {"source_image": key}}
    runner.jobs.create_job(job_id, "f5tts_infinitetalk", [], inputs, {}, owner_of(KEY))
    with serving(app, 30.0, 8) as port:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        conn.settimeout(30)
        conn.connect(("127.0.0.1", port))
        head = f"GET /v1/jobs/{job_id}/inputs/source_image HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n"
        conn.sendall(head.encode() + b"\r\n")
        time.sleep(TIMEOUT_S + 3)  # reads nothing meanwhile: the server's write waits, then is abandoned
        started = time.monotonic()
        data = b""  # what the buffers held, then the end: the server closed the connection
        while (chunk := conn.recv(1 << 20)) and len(data) < size / 4:
            data += chunk
        conn.close()
    assert data.startswith(b"HTTP/1.1 200") and len(data) < size / 4
    assert time.monotonic() - started < 10
