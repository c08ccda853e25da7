"""Bounded patience with Redis: retry with backoff while it is away, give up with a clear error after a while.

tenacity, around whole steps rather than redis-py's own `Retry` around each command: a step (submitting a node,
one poll of its events, storing a result) is several commands and BullMQ scripts across the event-loop bridge, is
safe to repeat as a whole, and its patience is a time (SPINBOT_QUEUE_REDIS_RETRY_SECONDS), which a per-command
count does not express. The clients keep redis-py's retry off (`Retry(NoBackoff(), 0)`) so the waits do not stack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, wait_exponential

from spinbot.queue.errors import QueueUnavailable

T = TypeVar("T")

# What a dropped or refused connection looks like, from redis-py (sync and asyncio: it wraps the socket's errors)
# and from the loop bridge (a BullMQ call that timed out). Other errors, OSError included, are not an outage.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, asyncio.TimeoutError)

FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 0.1, 2.0


def ride_out_outage(
    step: Callable[[], T],
    limit_seconds: float,
    redis_url: str,
    what: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """step(), tried again with a doubling wait (0.1 s up to 2 s) while Redis is unreachable; QueueUnavailable
    once it has been unreachable for `limit_seconds` (the last wait is cut short to try once more at the limit).
    `sleep` and `clock` are the waits and the time they are measured with (tests pass their own)."""
    backoff = wait_exponential(multiplier=FIRST_WAIT_SECONDS, max=LONGEST_WAIT_SECONDS)
    started = clock()

    def unreachable_for() -> float:
        return clock() - started

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(backoff(state), limit_seconds - unreachable_for()))

    def stop(state: RetryCallState) -> bool:
        return unreachable_for() >= limit_seconds

    retrying = Retrying(retry=retry_if_exception_type(REDIS_ERRORS), wait=wait, stop=stop, sleep=sleep)
    try:
        return retrying(step)
    except RetryError as gave_up:
        err = gave_up.last_attempt.exception()
        raise QueueUnavailable(
            f"Redis at {_safe(redis_url)} unreachable for {unreachable_for():.0f} s while {what}: "
            f"{type(err).__name__}: {err}"
        ) from err


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
