"""Progress and state events for live readers (CLI progress bars, the API's server-sent events).

Two buses with the same methods: in-process (embedded) and Redis streams (one stream per job, so a reader that
connects late still gets every event of the job in order, then follows new ones).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, cast


@dataclass(frozen=True)
class Event:
    """A job's or a node's state. A node's `progress` never goes down within one `attempt` (spinbot.control.progress
    publishes it); a new attempt (the node started again: a takeover, a resume, a retry, another worker) starts
    from 0 with a higher number. A job event's `progress` is the job's overall progress (spinbot.state.progress);
    a node event carries it too, as `job_progress`. A running node's event carries its time left as of `ts` once its
    rate is measured (`seconds_left`, spinbot.state.time_left), None before that and in every other event."""

    job_id: str
    kind: str  # "job" or "node"
    status: str
    node_id: str | None = None
    progress: float = 0.0
    message: str | None = None
    ts: float = field(default_factory=time.time)
    attempt: int | None = None  # node events: the node's attempt (NodeOut.attempts)
    job_progress: float | None = None  # node events: the job's overall progress
    seconds_left: float | None = None  # running node events: the node's estimated time left, once measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        # Entries written before a field existed (a Redis stream outlives an upgrade) take its default.
        return cls(**{k: data[k] for k in EVENT_FIELDS if k in data})


EVENT_FIELDS = tuple(Event.__dataclass_fields__)
Listener = Callable[[Event], None]


class EventBus:
    """In-process publish/subscribe with a bounded per-job history for late readers, kept for the jobs that
    published last (a long-lived API process sees every job it ever ran; a late reader of an older one gets the
    job's recorded state, which the API's streams send first anyway)."""

    history_limit = 2000  # events a job
    jobs_limit = 500  # jobs with a history

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._history: OrderedDict[str, list[Event]] = OrderedDict()
        self._cond = threading.Condition()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def subscribe_after_history(self, job_id: str, listener: Listener) -> tuple[list[Event], Callable[[], None]]:
        """The job's events so far and a subscription to every later one, taken together so that no event falls
        between them or comes twice."""
        with self._cond:
            return list(self._history.get(job_id, ())), self.subscribe(listener)

    def publish(self, event: Event) -> None:
        with self._cond:
            history = self._history.setdefault(event.job_id, [])
            self._history.move_to_end(event.job_id)
            history.append(event)
            del history[: max(0, len(history) - self.history_limit)]
            while len(self._history) > self.jobs_limit:
                self._history.popitem(last=False)
            listeners = list(self._listeners)
            self._cond.notify_all()
        for listener in listeners:
            listener(event)

    def follow(self, job_id: str, timeout: float = 15.0) -> Generator[Event | None, None, None]:
        """Every event of the job from the start, then new ones; yields None after `timeout` s of silence."""
        seen = 0
        while True:
            with self._cond:
                if seen >= len(self._history.get(job_id, ())):
                    self._cond.wait(timeout)
                history = self._history.get(job_id, [])
                fresh, seen = history[seen:], len(history)
            if not fresh:
                yield None
            yield from fresh

    def close(self) -> None:
        pass


class RedisEventBus(EventBus):
    """Events in a Redis stream per job (XADD, capped), read with XREAD from the first entry on."""

    def __init__(self, url: str, prefix: str = "spinbot:events:", ttl_seconds: int = 7 * 24 * 3600) -> None:
        super().__init__()
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=15)
        self.prefix = prefix
        self.ttl = ttl_seconds

    def publish(self, event: Event) -> None:
        key = self.prefix + event.job_id
        pipe = self.redis.pipeline()
        pipe.xadd(key, {"e": json.dumps(event.to_dict())}, maxlen=self.history_limit, approximate=True)
        pipe.expire(key, self.ttl)
        pipe.execute()
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def follow(self, job_id: str, timeout: float = 15.0) -> Generator[Event | None, None, None]:
        key, last = self.prefix + job_id, "0-0"
        while True:
            reply = cast(
                "list[tuple[bytes, list[tuple[str, dict[bytes, bytes]]]]]",  # one stream's entries
                self.redis.xread({key: last}, count=100, block=int(timeout * 1000)),
            )
            if not reply:
                yield None
                continue
            for entry_id, fields in reply[0][1]:
                last = entry_id
                yield Event.from_dict(json.loads(fields[b"e"]))

    def close(self) -> None:
        self.redis.close()


def make_event_bus(redis_url: str | None) -> EventBus:
    return RedisEventBus(redis_url) if redis_url else EventBus()
