"""`spinbot worker` stops on SIGTERM while its Redis is unreachable.

BullMQ's close() waits for its queue fetch, which it retries for as long as Redis is away: a worker whose Redis
was down never stopped (seen by a new user: SIGTERM, then a second one, and the worker was still there minutes later).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from spinbot.settings import Settings
from spinbot.worker.main import WorkerService


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_worker_whose_redis_is_unreachable_stops_when_asked(tmp_path):
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        storage_url=f"file://{tmp_path / 'store'}",
        data_dir=tmp_path / "data",
        worker_heartbeat_seconds=0.2,
    )
    service = WorkerService(settings, ["gpu", "cpu"])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(service.serve(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not service.runs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(service.runs) == {"gpu", "cpu"}
        time.sleep(1.0)  # the fetch loops are retrying the refused connection now
        asked = time.monotonic()
        loop.call_soon_threadsafe(service._stopping.set)  # what SIGTERM does
        thread.join(15)
        assert not thread.is_alive(), "the worker did not stop within 15 s of being asked"
        assert time.monotonic() - asked < 10
    finally:
        if not thread.is_alive():
            loop.close()
