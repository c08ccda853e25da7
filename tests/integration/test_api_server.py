"""The API as a real server (`spinbot serve` on loopback): refused uploads at the socket, and /healthz while event
streams are open. Embedded defaults, so nothing but the machine is needed."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from spinbot.api.auth import owner_of
from spinbot.state.db import get_engine
from spinbot.state.store import RUNNING, JobStore
from tests.support import services

pytestmark = pytest.mark.integration

KEY = "server-test-key"
LIMIT = 1024 * 1024
MiB = 1024 * 1024


class Server:
    def __init__(self, folder: Path):
        self.port, self.spool, self.data = services.free_port(), folder / "spool", folder / "data"
        self.spool.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
        env.update(
            {
                "SPINBOT_DATA_DIR": str(self.data),
                "SPINBOT_API_KEYS": KEY,
                "TMPDIR": str(self.spool),
                "SPINBOT_MAX_UPLOAD_BYTES": str(LIMIT),
                "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9",
                # the 50-stream test opens them all with one key (the per-key cap has its own test)
                "SPINBOT_MAX_STREAMS_PER_KEY": "100",
            }
        )
        self.log = folder / "server.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spinbot", "serve", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        assert services.wait_until(self.healthy, 60), self.log.read_text()[-3000:]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def spooled_bytes(self) -> int:
        """Bytes under the server's TMPDIR, named or held open unlinked. The server removes its spool folders
        while this walks them, so a file or folder that vanishes midway counts as nothing."""
        total = 0
        for folder, _dirs, files in os.walk(self.spool):  # os.walk skips folders that vanish; rglob raises
            for name in files:
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                if target.startswith(str(self.spool)) and target.endswith("(deleted)"):
                    total += os.stat(f"/proc/{self.proc.pid}/fd/{fd}").st_size
            except OSError:
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("api-server"))
    yield s
    s.stop()


def post_upload(server: Server, headers: list[str], body_chunks, watch=None) -> tuple[bytes, int]:
    """Send the request head, then body chunks until the server answers; (answer, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sent, answer = 0, b""
    try:
        sock.sendall(("\r\n".join(["POST /v1/uploads HTTP/1.1", "Host: t", *headers]) + "\r\n\r\n").encode())
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(chunk)
            sent += len(chunk)
            if watch:
                watch()
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        while piece := sock.recv(65536):  # the answer, up to the close that Connection: close promises
            answer += piece
    except OSError:
        pass
    finally:
        sock.close()
    return answer, sent


MULTIPART = "Content-Type: multipart/form-data; boundary=b"


def test_upload_without_a_key_gets_its_401_before_any_body_is_sent(server):
    started = time.monotonic()
    answer, _ = post_upload(server, [MULTIPART, f"Content-Length: {1 << 30}"], body_chunks=[])
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower()
    assert time.monotonic() - started < 5 and server.spooled_bytes() == 0


def test_upload_declaring_1_gib_gets_its_413_before_any_body_is_sent(server):
    answer, _ = post_upload(
        server, [MULTIPART, f"Authorization: Bearer {KEY}", f"Content-Length: {1 << 30}"], body_chunks=[]
    )
    assert answer.startswith(b"HTTP/1.1 413") and b"SPINBOT_MAX_UPLOAD_BYTES" in answer
    assert server.spooled_bytes() == 0


def test_chunked_upload_is_cut_at_the_limit_and_never_spools_more(server):
    peak = [0]

    def chunks():
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        yield f"{len(head):x}\r\n".encode() + head + b"\r\n"
        piece = b"\0" * (256 * 1024)
        for _ in range(256):  # up to 64 MiB offered
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"

    def watch():
        peak[0] = max(peak[0], server.spooled_bytes())

    answer, sent = post_upload(
        server, [MULTIPART, f"Authorization: Bearer {KEY}", "Transfer-Encoding: chunked"], chunks(), watch
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 16 * MiB  # the server answered long before the 64 MiB were out
    assert peak[0] <= LIMIT
    assert services.wait_until(lambda: server.spooled_bytes() == 0, 5)


async def _open_streams(port: int, ids: list[str]) -> list:
    conns = []
    for job_id in ids:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
        )
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        conns.append((reader, writer))
    return conns


def test_healthz_stays_fast_with_50_open_event_streams(server):
    jobs = JobStore(get_engine(f"sqlite:///{(server.data / 'spinbot.db').resolve()}"))
    ids = []
    for _ in range(50):
        job_id = jobs.new_id()
        jobs.create_job(
            job_id,
            "f5tts_infinitetalk",
            [("f5_to_tts", "f5_to_tts", "python")],
            {"values": {"prompt": "p"}, "artifacts": {}},
            {},
            owner_of(KEY),
        )
        jobs.set_job_status(job_id, RUNNING)  # nothing runs it: its stream stays open
        ids.append(job_id)
    loop = asyncio.new_event_loop()
    conns = loop.run_until_complete(_open_streams(server.port, ids))
    holder = threading.Thread(target=loop.run_forever, daemon=True)
    holder.start()
    try:
        time.sleep(1.5)  # the streams are into their waits
        times = []
        for _ in range(60):
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=30) as reply:
                assert reply.status == 200
            times.append(time.perf_counter() - started)
            time.sleep(0.02)
    finally:
        for _, writer in conns:
            loop.call_soon_threadsafe(writer.close)
        loop.call_soon_threadsafe(loop.stop)
        holder.join(5)
    # Before the fix each stream held a worker thread: /healthz took over a second with 50 streams open. The bound
    # here leaves room for a shared CI machine; benchmarks/api_streams.py measures the 50 ms target.
    assert statistics.median(times) < 0.1 and max(times) < 1.0, sorted(times)[-5:]
