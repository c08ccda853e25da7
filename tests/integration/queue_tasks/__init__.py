"""Test-only tasks for queue workers, loaded with SPINBOT_EXTRA_TASKS (never part of the production catalog).

Each task leaves traces in Redis (the worker's SPINBOT_REDIS_URL) so tests can count runs and see the order.
"""

from __future__ import annotations

import functools
import os

import redis

from spinbot.settings import get_settings


@functools.lru_cache(maxsize=1)
def traces() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


def trace_key(kind: str, job_id: str, node_id: str = "") -> str:
    return f"test:{kind}:{job_id}:{node_id}"


def record_start(job_id: str, node_id: str) -> None:
    """One entry per run: which process ran it (runs), and the order runs started within a job (order)."""
    pipe = traces().pipeline()
    pipe.rpush(trace_key("runs", job_id, node_id), os.getpid())
    pipe.rpush(trace_key("order", job_id), node_id)
    pipe.execute()
