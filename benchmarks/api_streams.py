"""The API under open event streams, and the upload path under a refused 1 GiB body; loopback only, bounded time.

(Past 400 lines: the server, the stream holders in their own process and the upload probe are one measurement
of one server run; the parts share its start, its folders and its teardown.)

    python benchmarks/api_streams.py [--streams 0,50,200] [--probes 300] [--redis-url redis://127.0.0.1:6379/0]
                                     [--no-redis] [--upload-mib 1024] [--nice N]
                                     [--out benchmarks/results/api_streams.json]

Starts `spinbot serve` (SQLite and a local store in a temporary folder; events through Redis unless --no-redis;
its TMPDIR a folder of its own, so what an upload spools there can be measured) and:
- creates jobs that stay `running` (rows only; nothing runs them) and holds N `/v1/jobs/{id}/events` streams open
  from a separate process, which also publishes one progress event a second to every job it follows, so the
  streams carry traffic; then times `/healthz` (a new connection for each probe, like a load balancer), 20 ms
  apart, and reports p50/p99/max for each N. Target: p99 under 50 ms at 200 streams.
- sends `POST /v1/uploads` bodies of 1 GiB from a raw socket (no key with a Content-Length; a key with a
  Content-Length; a key with no length, chunked), a chunk at a time, stopping when the server answers or closes; it
  reports the status, how long the answer took, how much of the body went out before it, the peak bytes under the
  server's TMPDIR and its upload folder, and the server's resident memory peak. Target: nothing written.
Writes the JSON with the machine (benchmarks/machine.py), the load average and the command. On a shared machine,
`--nice -10` (root) runs the benchmark and every process it starts (server, stream clients, publisher) ahead of the
machine's other work, so the figures are the API's and not the neighbours'; the JSON records the value.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine  # noqa: E402

KEY = "bench-key"
MiB = 1024 * 1024
PROBE_GAP_S = 0.02
START_SECONDS = 60


# ---- the stream holder (a child process: `api_streams.py --hold PORT IDS_FILE`) -------------------------------
async def _hold_one(port: int, job_id: str, counts: dict[str, int], ready: asyncio.Event, opened: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {KEY}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = (await reader.readline()).split()[1]
    if status != b"200":
        raise RuntimeError(f"events stream answered {status!r}")
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"event: snapshot"):
            opened.append(job_id)
            if len(opened) == counts["wanted"]:
                ready.set()
        elif line.startswith(b"event: node"):
            counts["events"] += 1


async def _hold(port: int, ids: list[str], redis_url: str) -> None:
    counts, ready, opened = {"wanted": len(ids), "events": 0}, asyncio.Event(), []
    tasks = [asyncio.create_task(_hold_one(port, job_id, counts, ready, opened)) for job_id in ids]
    await asyncio.wait_for(ready.wait(), 60)
    publisher = Publisher(redis_url, ids) if redis_url else None
    if publisher is not None:
        publisher.start()
    print(json.dumps({"ready": len(opened)}), flush=True)
    # Report the events received each time the parent asks (a line on stdin), until stdin closes.
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        failed = sum(1 for t in tasks if t.done())
        print(json.dumps({"events": counts["events"], "closed": failed}), flush=True)
    if publisher is not None:
        publisher.stop.set()
        await loop.run_in_executor(None, publisher.join)
    for task in tasks:
        task.cancel()


class StreamHolder:
    def __init__(self, port: int, ids: list[str], folder: Path, redis_url: str | None):
        ids_file = folder / f"ids-{len(ids)}-{time.monotonic_ns()}.json"
        ids_file.write_text(json.dumps(ids))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--hold", str(port), str(ids_file), redis_url or ""],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line or json.loads(line).get("ready") != len(ids):
            raise RuntimeError(f"the stream holder did not open its {len(ids)} streams: {line!r}")

    def counts(self) -> dict[str, int]:
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the server ---------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, folder: Path, redis_url: str | None):
        self.port = _free_port()
        self.data, self.spool = folder / "data", folder / "spool"
        self.spool.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
        env.update(
            {
                "SPINBOT_DATA_DIR": str(self.data),
                "SPINBOT_API_KEYS": KEY,
                "TMPDIR": str(self.spool),
                "SPINBOT_LOG_LEVEL": "WARNING",
                "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9",
            }
        )
        if redis_url:
            env["SPINBOT_REDIS_URL"] = redis_url
        self.log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spinbot", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if _get(self.port, "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def memory_kib(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(line for line in f if line.startswith(field)).split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, float]:
    """One GET on a new connection; (status, milliseconds from connect to the whole answer)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        return reply.status, (time.perf_counter() - started) * 1000
    finally:
        conn.close()


# ---- /healthz under streams ---------------------------------------------------------------------------------------
def _running_jobs(data_dir: Path, count: int) -> list[str]:
    from spinbot.api.auth import owner_of
    from spinbot.state.db import get_engine
    from spinbot.state.store import RUNNING, JobStore

    jobs = JobStore(get_engine(f"sqlite:///{(data_dir / 'spinbot.db').resolve()}"))
    ids = []
    for _ in range(count):
        job_id = jobs.new_id()
        jobs.create_job(
            job_id,
            "f5tts_infinitetalk",
            [("f5_to_tts", "f5_to_tts", "python")],
            {"values": {"prompt": "bench"}, "artifacts": {}},
            {},
            owner_of(KEY),
        )
        jobs.set_job_status(job_id, RUNNING)
        ids.append(job_id)
    return ids


class Publisher(threading.Thread):
    """One progress event a second for each of `ids`, through the bus the server reads, spread over the second as
    independent jobs publish them. It runs in the stream holder's process, so that it takes no time from the probes."""

    def __init__(self, redis_url: str, ids: list[str]):
        super().__init__(daemon=True)
        from spinbot.state.events import RedisEventBus

        self.bus, self.ids = RedisEventBus(redis_url), ids
        self.stop = threading.Event()

    def run(self) -> None:
        from spinbot.state.events import Event

        while not self.stop.is_set():
            for job_id in self.ids:
                self.bus.publish(Event(job_id, "node", "running", "f5_to_tts", progress=0.5, message="bench"))
                if self.stop.wait(1.0 / len(self.ids)):
                    break
        self.bus.redis.delete(*[self.bus.prefix + job_id for job_id in self.ids])
        self.bus.close()


def _probe(port: int, count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        status, ms = _get(port, "/healthz")
        if status != 200:
            raise RuntimeError(f"/healthz answered {status}")
        times.append(ms)
        time.sleep(PROBE_GAP_S)
    times.sort()
    return {
        "probes": count,
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
        "max_ms": round(times[-1], 2),
    }


def bench_streams(server: Server, redis_url: str | None, levels: list[int], probes: int, folder: Path) -> list[dict]:
    results, holders, open_now = [], [], 0
    try:
        for level in levels:
            if level > open_now:
                ids = _running_jobs(server.data, level - open_now)
                holders.append(StreamHolder(server.port, ids, folder, redis_url))
                open_now = level
                time.sleep(2.0)  # a couple of publish rounds before the probes
            before = [h.counts()["events"] for h in holders]
            cpu, wall = server.cpu_seconds(), time.perf_counter()
            row = {"open_streams": open_now, **_probe(server.port, probes)}
            row["server_cpu_percent"] = round(100 * (server.cpu_seconds() - cpu) / (time.perf_counter() - wall), 1)
            row["load_average_1min"] = os.getloadavg()[0]
            after = [h.counts() for h in holders]
            row["stream_events_during_probes"] = sum(a["events"] for a in after) - sum(before)
            row["streams_closed"] = sum(a["closed"] for a in after)
            row["server_threads"] = len(os.listdir(f"/proc/{server.proc.pid}/task"))
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for holder in holders:
            holder.close()
    return results


# ---- the refused upload -------------------------------------------------------------------------------------------
def _tree_bytes(*folders: Path) -> int:
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def _unlinked_open_bytes(pid: int, folders: list[Path]) -> int:
    """Bytes of files the process holds open under the folders with no name there (tempfile.TemporaryFile, which
    Starlette's multipart spooling uses, is created unlinked: a folder walk does not see it)."""
    total, prefixes = 0, tuple(str(f) for f in folders)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(prefixes) and target.endswith("(deleted)"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """Peak bytes on disk under the given folders (named or held open unlinked by the server) and peak resident
    memory of the server, every 10 ms."""

    def __init__(self, server: Server, folders: list[Path]):
        super().__init__(daemon=True)
        self.server, self.folders = server, folders
        self.peak_disk = self.peak_rss_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            on_disk = _tree_bytes(*self.folders) + _unlinked_open_bytes(self.server.proc.pid, self.folders)
            self.peak_disk = max(self.peak_disk, on_disk)
            self.peak_rss_kib = max(self.peak_rss_kib, self.server.memory_kib("VmRSS"))
            time.sleep(0.01)


def _send_upload(port: int, total: int, key: bool, declare_length: bool) -> dict:
    """Headers, then the body 1 MiB at a time until the server answers or closes, or all of it went out."""
    boundary = "benchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nportrait\r\n--{boundary}\r\n'
        'Content-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    lines = ["POST /v1/uploads HTTP/1.1", "Host: bench", f"Content-Type: multipart/form-data; boundary={boundary}"]
    if key:
        lines.append(f"Authorization: Bearer {KEY}")
    lines.append(f"Content-Length: {total}" if declare_length else "Transfer-Encoding: chunked")
    sock = socket.create_connection(("127.0.0.1", port))
    started, sent, answer, chunk = time.perf_counter(), 0, b"", b"\0" * MiB
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            piece = head + chunk[len(head) :] if sent == 0 else chunk[: min(MiB, total - sent)]
            sock.sendall(piece if declare_length else f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        if sent >= total and not declare_length:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(30)
        answer = sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        try:
            answer = sock.recv(65536)
        except OSError:
            pass
    finally:
        sock.close()
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1") else None
    return {
        "status": status,
        "answer_ms": round((time.perf_counter() - started) * 1000, 1),
        "body_sent_before_answer_mib": round(sent / MiB, 1),
        "connection_close": b"connection: close" in answer.lower(),
    }


def bench_upload(server: Server, total: int) -> list[dict]:
    results = []
    cases = [
        ("no key, Content-Length", False, True),
        ("key, Content-Length", True, True),
        ("key, chunked (no length)", True, False),
    ]
    for name, key, declare in cases:
        hwm_before = server.memory_kib("VmHWM")
        rss_before = server.memory_kib("VmRSS")
        sampler = Sampler(server, [server.spool, server.data])
        disk_before = _tree_bytes(server.spool, server.data)
        sampler.start()
        row = {"case": name, "body_mib": round(total / MiB), **_send_upload(server.port, total, key, declare)}
        time.sleep(0.3)
        sampler.done.set()
        sampler.join()
        row.update(
            {
                "peak_disk_written_mib": round(max(0, sampler.peak_disk - disk_before) / MiB, 2),
                "server_rss_before_mib": round(rss_before / 1024, 1),
                "server_rss_peak_mib": round(sampler.peak_rss_kib / 1024, 1),
                "server_peak_rss_grew_mib": round((server.memory_kib("VmHWM") - hwm_before) / 1024, 1),
            }
        )
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main() -> None:
    args = _parse_args()
    if args.hold:
        asyncio.run(_hold(int(args.hold[0]), json.loads(Path(args.hold[1]).read_text()), args.hold[2]))
        return
    redis_url = None if args.no_redis else args.redis_url
    if args.nice:
        os.nice(args.nice)  # inherited by the server and the stream holders
    started, load_at_start = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="spinbot-bench-api-") as tmp:
        folder = Path(tmp)
        server = Server(folder, redis_url)
        try:
            streams = bench_streams(server, redis_url, args.streams, args.probes, folder)
            upload = bench_upload(server, args.upload_mib * MiB)
        finally:
            server.stop()
    report = {
        "benchmark": "api_streams",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "events": "redis" if redis_url else "in-process",
        "nice": args.nice,
        "healthz_under_event_streams": streams,
        "healthz_p99_target_ms": 50,
        "refused_upload": upload,
        "refused_upload_target": "nothing written, no memory growth",
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[0, 50, 200])
    p.add_argument("--probes", type=int, default=300)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--no-redis", action="store_true", help="events through the in-process bus")
    p.add_argument("--upload-mib", type=int, default=1024)
    p.add_argument("--nice", type=int, default=0, help="scheduling priority change for every benchmark process")
    p.add_argument("--out", type=Path, default=HERE / "results" / "api_streams.json")
    p.add_argument("--hold", nargs=3, metavar=("PORT", "IDS_FILE", "REDIS_URL"), help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    main()
