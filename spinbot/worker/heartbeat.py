"""Each worker keeps a Redis key alive (TTL) saying who it is, which queues it serves and what it runs now."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from pydantic import BaseModel, Field

from spinbot.queue.keys import WORKER_PREFIX, worker_key


class RunningNode(BaseModel):
    job_id: str
    node_id: str
    task: str
    queue: str
    since: float


class WorkerInfo(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    started_at: float
    beat_at: float = 0.0
    running: list[RunningNode] = Field(default_factory=list)
    finished: int = 0
    models: list[str] = Field(default_factory=list)


class WorkerState:
    """What this worker is doing; the executor threads write it, the heartbeat reads it."""

    def __init__(self, queues: list[str]):
        self.info = WorkerInfo(
            id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=queues,
            started_at=time.time(),
        )
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.info.id

    def started(self, node: RunningNode) -> None:
        with self._lock:
            self.info.running.append(node)

    def finished(self, node: RunningNode) -> None:
        with self._lock:
            self.info.running = [n for n in self.info.running if n is not node]
            self.info.finished += 1

    def snapshot(self, models: list[str]) -> WorkerInfo:
        with self._lock:
            return self.info.model_copy(
                update={"beat_at": time.time(), "models": models, "running": list(self.info.running)}, deep=True
            )


def beat(client: Any, info: WorkerInfo, ttl_seconds: float) -> Any:
    """Write the heartbeat; works with a sync or an asyncio Redis client (returns its awaitable for the latter)."""
    return client.set(worker_key(info.id), info.model_dump_json(), px=int(ttl_seconds * 1000))


def list_workers(client: redis.Redis) -> list[WorkerInfo]:
    """Live workers: those whose heartbeat has not expired."""
    workers = []
    for key in client.scan_iter(match=f"{WORKER_PREFIX}*", count=500):
        raw = client.get(key)
        if raw:
            workers.append(WorkerInfo.model_validate_json(raw))
    return sorted(workers, key=lambda w: w.started_at)
