"""Bounded patience with Redis: retry with backoff while it is away, give up with a clear error after a while."""

from __future__ import annotations

import asyncio
import time

import redis

from spinbot.queue.errors import QueueUnavailable

# What a dropped or refused connection looks like, from redis-py (sync and asyncio) and from the loop bridge.
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError, asyncio.TimeoutError)


class OutageClock:
    """Counts how long Redis has been failing in a row; raises once that passes the limit."""

    def __init__(self, limit_seconds: float, redis_url: str, what: str):
        self.limit = limit_seconds
        self.redis_url = redis_url
        self.what = what
        self.since: float | None = None
        self.delay = 0.1

    def ok(self) -> None:
        self.since = None
        self.delay = 0.1

    def failed(self, err: BaseException) -> None:
        """Sleep before the next try, or raise QueueUnavailable when the outage lasted too long."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= self.limit:
            raise QueueUnavailable(f"Redis at {_safe(self.redis_url)} unreachable for {waited:.0f} s while "
                                   f"{self.what}: {type(err).__name__}: {err}") from err
        time.sleep(min(self.delay, self.limit - waited))
        self.delay = min(self.delay * 2, 2.0)


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
