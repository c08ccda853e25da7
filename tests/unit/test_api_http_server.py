"""The API as an outside client meets it: a real uvicorn on a loopback port with `spinbot serve`'s options, spoken to
over raw sockets (HEAD framing on a kept-alive connection, an endless event stream asked with HEAD, requests the
server cannot parse, hostile path parameters)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.state.store import JobStore
from tests.support.server import serving

KEY = "key-a-123"
DATA = bytes(range(256)) * 4096  # 1 MiB
NODES = [("f5_to_tts", "f5_to_tts", "python"), ("infinite_talk", "infinite_talk", "python")]


@pytest.fixture
def app(spinbot_env, use_settings):
    use_settings(api_keys=KEY)
    return create_app()


@pytest.fixture
def port(app):
    with serving(app, 5.0, 16) as port:
        yield port


@pytest.fixture
def job_id(app) -> str:
    """A running job of KEY with a 1 MiB artifact."""
    runner = app.state.services.runner
    jobs: JobStore = runner.jobs
    job_id = jobs.new_id()
    jobs.create_job(job_id, "f5tts_infinitetalk", NODES, {"values": {}, "artifacts": {}}, {}, owner_of(KEY))
    key = f"jobs/{job_id}/f5_to_tts/speech.wav"
    runner.artifacts.put_bytes(key, DATA)
    record = {"name": "speech.wav", "key": key, "size": len(DATA), "content_type": "audio/wav"}
    jobs.node_succeeded(job_id, "f5_to_tts", {"values": {}, "artifacts": {"audio": key}, "meta": {}}, [record])
    jobs.set_job_status(job_id, "running")
    return job_id


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()


def read_head(conn: socket.socket, buffered: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """One answer's status line and headers; returns what was read past them."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before the head ended: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, rest


def read_all(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_head_of_a_file_sends_its_headers_only_and_keeps_the_connection(port, job_id):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request("HEAD", f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav"))
        status, headers, rest = read_head(conn)
        assert status == "HTTP/1.1 200 OK" and headers["content-length"] == str(len(DATA))
        assert headers["accept-ranges"] == "bytes" and rest == b""  # not one byte of the file
        conn.sendall(request("GET", "/healthz"))  # the same connection serves the next request
        status, _, _ = read_head(conn, rest)
        assert status == "HTTP/1.1 200 OK"


def test_head_of_a_running_job_s_event_stream_ends_after_its_headers(app, port, job_id, monkeypatch):
    following, stopped = threading.Event(), threading.Event()
    open_feed = app.state.services.feed.open

    async def watched_open(*args, **kwargs):  # the stream's subscription: opened, and closed when the stream ends
        subscription = await open_feed(*args, **kwargs)
        following.set()
        close = subscription.close

        def closing() -> None:
            stopped.set()
            close()

        subscription.close = closing
        return subscription

    monkeypatch.setattr(app.state.services.feed, "open", watched_open)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request("HEAD", f"/v1/jobs/{job_id}/events"))
        status, headers, rest = read_head(conn)
        assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith("text/event-stream")
        conn.sendall(request("GET", f"/v1/jobs/{job_id}"))  # the stream did not hold the connection
        status, _, _ = read_head(conn, rest)
        assert status == "HTTP/1.1 200 OK"
        time.sleep(0.5)
        # nothing keeps following the job's events for an answer that has no body
        assert following.is_set() and stopped.is_set()


def test_a_body_that_goes_bad_during_an_answer_closes_it_without_an_error_inside(port, job_id):
    head = f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
        status, _, rest = read_head(conn)
        assert status == "HTTP/1.1 200 OK"  # the event stream is under way
        conn.sendall(b"zz-not-a-chunk-size\r\n")  # the request's body turns malformed meanwhile
        after = rest + read_all(conn)
    assert b"HTTP/1.1 400" not in after  # no second answer written into the stream's body; the connection closed


def test_a_request_the_server_cannot_parse_gets_a_json_error(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n")
        answer = read_all(conn)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head
    assert json.loads(body) == {"error": "invalid HTTP request: bad syntax, or a request head over 65,536 bytes"}


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_a_request_head_over_the_limit_is_refused_even_in_one_read(port, line_end):
    # 100 KB of head sent at once: h11 alone bounds only a head it has not yet seen whole
    head = b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1" + line_end + b"Host: localhost" + line_end + line_end
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        answer = read_all(conn)
    status, body = answer.split(b"\r\n\r\n", 1)
    assert status.startswith(b"HTTP/1.1 431") and b"content-type: application/json" in status
    assert json.loads(body) == {"error": "the request head is over 65,536 bytes"}


def test_a_request_head_over_the_limit_pipelined_behind_another_is_refused(port):
    small = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    big = b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(small + big)  # one write: the second head waits in h11's buffer, whole
        answer = read_all(conn)
    first, second = answer.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200") and second.startswith(b"431"), answer[:300]
    assert json.loads(second.split(b"\r\n\r\n", 1)[1]) == {"error": "the request head is over 65,536 bytes"}


def test_a_request_head_within_the_limit_in_pieces_and_kept_alive_is_served(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for _ in range(3):  # three requests on one connection, each head 40 KB in 1 KB pieces
            head = b"GET /healthz?" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"
            for start in range(0, len(head), 1024):
                conn.sendall(head[start : start + 1024])
            status, headers, body = read_head(conn)
            while len(body) < int(headers["content-length"]):
                body += conn.recv(65536)
            assert status == "HTTP/1.1 200 OK", status


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/{job}/live/%1b%5b31mX%0d%0aSet-Cookie:%20a=b/index.m3u8",  # the node id
        "/v1/jobs/{job}/live/infinite_talk/%1b%5b31mX%0d%0a%00",  # the segment name
    ],
)
def test_control_characters_in_a_live_path_are_not_echoed_raw(port, job_id, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request("GET", path.format(job=job_id)))
        status, headers, body = read_head(conn)
        while len(body) < int(headers["content-length"]):
            body += conn.recv(65536)
    message = json.loads(body)["error"]
    assert status == "HTTP/1.1 404 Not Found" and "set-cookie: a=b" not in str(headers).lower()
    assert not any(ord(c) < 32 for c in message), message  # one line, no terminal escapes
    assert "\\x1b[31mX\\r\\n" in message  # quoted, as every echo of a client's text
