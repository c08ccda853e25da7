"""Job events for asyncio readers (the API's server-sent events), without a thread per reader.

A blocking `EventBus.follow` in a worker thread per open stream used up the API's thread pool: with 50 streams open,
every other route waited seconds for a thread. Here the in-process bus hands events to each reader's asyncio queue
from the publishing thread, and on Redis one reader task serves every open stream with one XREAD over all their
streams, fanning the entries out to the readers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from spinbot.state.events import Event, EventBus, RedisEventBus

log = logging.getLogger(__name__)

BLOCK_MS = 250  # how long one XREAD waits; a stream that opens meanwhile joins the next one
# One XREAD names every open stream, so its cost grows with them: reads are at least this far apart, and the events of
# that time come together (a progress display does not need them sooner).
MIN_READ_SECONDS = 0.1
REDIS_RETRY_SECONDS = 1.0


# A reader's queue is bounded (each open event stream has one, filled whether or not its client reads): past
# COALESCE_AFTER waiting events, a node's progress replaces the one of the same node and attempt still waiting (only
# its newest counts); state changes are always kept. Past MAX_PENDING the reader has lagged too far: its queue is
# emptied and it ends (ReaderLagged), the API's stream with an event asking the client to reconnect (a stream starts
# from the job's snapshot, so nothing is lost).
COALESCE_AFTER = 64
MAX_PENDING = 1000


class ReaderLagged(Exception):
    """A reader fell MAX_PENDING events behind: its events were dropped, and it should start again."""


def _is_progress(event: Event) -> bool:
    return event.kind == "node" and event.status == "running" and event.node_id is not None


class EventQueue(asyncio.Queue[Event]):
    """An asyncio queue that never holds more than MAX_PENDING events (above). put_nowait never blocks or raises.

    Written on asyncio.Queue's `_put`/`_get` hooks over its `_queue` deque, the ones the standard library's own
    LifoQueue and PriorityQueue override: coalescing inside them keeps the queue's own bookkeeping (waiting getters
    woken, unfinished tasks counted), which a wrapper around put_nowait would have to redo."""

    lagged = False

    def _put(self, item: Event) -> None:
        pending: Any = self._queue  # type: ignore[attr-defined]  # asyncio.Queue's deque
        if self.lagged:
            return
        if len(pending) >= COALESCE_AFTER and _is_progress(item):
            for queued in reversed(pending):
                if queued.node_id == item.node_id and queued.kind == "node":
                    if _is_progress(queued) and queued.attempt == item.attempt:
                        pending.remove(queued)  # the newest progress only, in the newest one's place
                    break  # the node's latest waiting event decides: a state change after it stays before it
        if len(pending) >= MAX_PENDING:
            pending.clear()
            self.lagged = True
            return
        pending.append(item)

    def _get(self) -> Event:
        if self.lagged and not self._queue:  # type: ignore[attr-defined]
            raise ReaderLagged(f"the reader fell over {MAX_PENDING} events behind")
        return super()._get()

    def empty(self) -> bool:
        return super().empty() and not self.lagged


async def _queued(queue: asyncio.Queue[Event], idle: float) -> AsyncIterator[Event | None]:
    """Events from the queue; None after `idle` seconds without one; ReaderLagged where an EventQueue overflowed."""
    while True:
        try:
            async with asyncio.timeout(idle):  # a timer, not the task per wait that wait_for makes
                event = await queue.get()
        except TimeoutError:
            yield None
            continue
        yield event


@dataclass(eq=False)
class Subscription:
    """One reader's events, from the moment it was opened (or from the job's first event, with its history)."""

    queue: asyncio.Queue[Event]
    close: Callable[[], None]

    async def events(self, idle: float = 15.0) -> AsyncIterator[Event | None]:
        """Its events in order, None after `idle` seconds without one; closed when the iteration ends."""
        try:
            async for event in _queued(self.queue, idle):
                yield event
        finally:
            self.close()


class LocalEventFeed:
    """The in-process bus: its history first (unless not wanted), then new events, handed over from the publishing
    thread."""

    def __init__(self, bus: EventBus):
        self.bus = bus

    async def open(self, job_id: str, history: bool = True) -> Subscription:
        """Subscribed when this returns: a reader that reads the job's state next and then follows misses nothing
        published after it opened (history=False: nothing published before is replayed over that state)."""
        loop = asyncio.get_running_loop()
        queue = EventQueue()

        def deliver(event: Event) -> None:
            if event.job_id == job_id:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                except RuntimeError:  # the API's loop has closed
                    pass

        if not history:
            return Subscription(queue, self.bus.subscribe(deliver))
        past, unsubscribe = self.bus.subscribe_after_history(job_id, deliver)
        for event in past:
            queue.put_nowait(event)
        return Subscription(queue, unsubscribe)

    async def follow(self, job_id: str, idle: float = 15.0) -> AsyncIterator[Event | None]:
        async for event in (await self.open(job_id)).events(idle):
            yield event

    async def close(self) -> None:
        pass


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class _Reader:
    job_id: str
    last: tuple[int, int] = (0, 0)  # the last entry handed to this reader
    queue: EventQueue = field(default_factory=EventQueue)


class RedisEventFeed:
    """One XREAD loop for all open streams of this process, on one connection."""

    def __init__(self, url: str, prefix: str):
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=BLOCK_MS / 1000 + 10)
        self.prefix = prefix
        self._readers: dict[str, set[_Reader]] = {}
        self._task: asyncio.Task | None = None

    async def open(self, job_id: str, history: bool = True) -> Subscription:
        """Subscribed when this returns; history=False: from the stream's last entry now on (LocalEventFeed.open)."""
        reader = _Reader(job_id, last=(0, 0) if history else await self._last_entry(job_id))
        self._readers.setdefault(job_id, set()).add(reader)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_all(), name="spinbot-event-feed")

        def close() -> None:
            readers = self._readers.get(job_id)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._readers[job_id]

        return Subscription(reader.queue, close)

    async def follow(self, job_id: str, idle: float = 15.0) -> AsyncIterator[Event | None]:
        async for event in (await self.open(job_id)).events(idle):
            yield event

    async def _last_entry(self, job_id: str) -> tuple[int, int]:
        try:
            last: Any = await self.redis.xrevrange(self.prefix + job_id, count=1)
        except Exception as err:  # noqa: BLE001 - Redis away: from now, by this host's clock
            # Not from the start: the history would replay over the snapshot (a retried job's old "failed" would end
            # the stream). Stream ids are the Redis host's milliseconds; nothing is published while it is away.
            log.warning("event feed cannot read Redis", extra={"error": str(err)})
            return (int(time.time() * 1000), 0)
        return _entry_id(last[0][0]) if last else (0, 0)

    async def _read_all(self) -> None:
        loop = asyncio.get_running_loop()
        while self._readers:
            started = loop.time()
            # Each stream from the oldest position one of its readers still needs (a new reader starts at 0).
            starts = {job: min(r.last for r in readers) for job, readers in self._readers.items()}
            streams: dict[Any, Any] = {self.prefix + job: f"{ms}-{seq}" for job, (ms, seq) in starts.items()}
            try:
                reply: Any = await self.redis.xread(streams, count=500, block=BLOCK_MS)
            except Exception as err:  # noqa: BLE001 - Redis down or restarting: idle ticks until it is back
                log.warning("event feed cannot read Redis", extra={"error": str(err)})
                await asyncio.sleep(REDIS_RETRY_SECONDS)
                continue
            for key, entries in reply or []:
                job_id = key.decode()[len(self.prefix) :]
                self._fan_out(job_id, entries, starts[job_id])
            if reply:
                await asyncio.sleep(MIN_READ_SECONDS - (loop.time() - started))

    def _fan_out(self, job_id: str, entries: list, start: tuple[int, int]) -> None:
        """Entries after `start` go to the readers that were at `start` or later when the read began; a reader that
        joined during the read is further back, and the next read starts from its position."""
        for raw_id, fields in entries:
            entry = _entry_id(raw_id)
            event = Event.from_dict(json.loads(fields[b"e"]))
            for reader in self._readers.get(job_id, ()):
                if reader.last >= start and entry > reader.last:
                    reader.last = entry
                    reader.queue.put_nowait(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.redis.aclose()


def make_event_feed(bus: EventBus, redis_url: str | None) -> LocalEventFeed | RedisEventFeed:
    if isinstance(bus, RedisEventBus) and redis_url:
        return RedisEventFeed(redis_url, bus.prefix)
    return LocalEventFeed(bus)
