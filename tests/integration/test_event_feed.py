"""The API's event feeds: every reader gets its job's events in order, once, history first, with no thread per
reader; on Redis, one reader task serves them all."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from spinbot.state.event_feed import LocalEventFeed, RedisEventFeed
from spinbot.state.events import Event, EventBus, RedisEventBus

pytestmark = pytest.mark.integration


async def collect(feed, job_id: str, count: int, timeout: float = 10.0) -> list[float]:
    got = []
    async with asyncio.timeout(timeout):
        async for event in feed.follow(job_id, idle=0.5):
            if event is not None:
                got.append(event.progress)
                if len(got) == count:
                    return got
    return got


def publish(bus: EventBus, job_id: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        bus.publish(Event(job_id, "node", "running", "n", progress=float(i)))


async def follow_while_publishing(bus: EventBus, feed, jobs: list[str]) -> dict[str, list[list[float]]]:
    """Two readers on the first job (one joining late), one on each other; 5 events before, 45 during."""
    for job in jobs:
        publish(bus, job, 0, 5)
    readers = {job: [asyncio.create_task(collect(feed, job, 50))] for job in jobs}
    await asyncio.sleep(0.3)
    threads = [threading.Thread(target=publish, args=(bus, job, 5, 45)) for job in jobs]
    for t in threads:
        t.start()
    await asyncio.sleep(0.05)
    readers[jobs[0]].append(asyncio.create_task(collect(feed, jobs[0], 50)))
    for t in threads:
        await asyncio.to_thread(t.join)
    return {job: [await task for task in tasks] for job, tasks in readers.items()}


def test_local_feed_delivers_history_then_live_events_in_order_once():
    bus = EventBus()
    jobs = [uuid.uuid4().hex for _ in range(3)]
    results = asyncio.run(follow_while_publishing(bus, LocalEventFeed(bus), jobs))
    for job, runs in results.items():
        for got in runs:
            assert got == [float(i) for i in range(50)], job
    assert len(results[jobs[0]]) == 2


def test_redis_feed_fans_one_reader_out_to_every_stream(redis_url):
    prefix = f"spinbot-test-feed:{uuid.uuid4().hex[:8]}:"
    bus = RedisEventBus(redis_url, prefix=prefix)
    jobs = [uuid.uuid4().hex for _ in range(3)]

    async def run():
        feed = RedisEventFeed(redis_url, prefix)
        try:
            results = await follow_while_publishing(bus, feed, jobs)
            tasks = [t for t in asyncio.all_tasks() if t.get_name() == "spinbot-event-feed"]
            return results, len(tasks), feed._readers
        finally:
            await feed.close()

    try:
        results, reader_tasks, left = asyncio.run(run())
    finally:
        bus.redis.delete(*[prefix + job for job in jobs])
        bus.close()
    for job, runs in results.items():
        for got in runs:
            assert got == [float(i) for i in range(50)], job
    assert reader_tasks <= 1 and left == {}  # one reader task; finished readers leave nothing behind


async def open_then_publish(bus: EventBus, feed, job_id: str, pause: float = 0.0) -> list[float]:
    """5 events, (a pause,) a reader opened without history, 3 more: what the reader gets."""
    publish(bus, job_id, 0, 5)
    await asyncio.sleep(pause)
    subscription = await feed.open(job_id, history=False)
    await asyncio.to_thread(publish, bus, job_id, 5, 3)
    got = []
    async with asyncio.timeout(10):
        async for event in subscription.events(idle=0.5):
            if event is not None:
                got.append(event.progress)
                if len(got) == 3:
                    break
    await asyncio.sleep(0.3)  # a stray replay of the first five would have come by now
    while not subscription.queue.empty():
        got.append(subscription.queue.get_nowait().progress)
    return got


def test_local_feed_opened_without_history_gets_only_later_events():
    bus = EventBus()
    assert asyncio.run(open_then_publish(bus, LocalEventFeed(bus), uuid.uuid4().hex)) == [5.0, 6.0, 7.0]


def redis_open_then_publish(redis_url: str, end_unreadable: bool = False, pause: float = 0.0) -> list[float]:
    """open_then_publish on a Redis feed with a stream of its own; `end_unreadable`: Redis fails the one read that
    finds the stream's end."""
    prefix = f"spinbot-test-feed:{uuid.uuid4().hex[:8]}:"
    bus = RedisEventBus(redis_url, prefix=prefix)
    job_id = uuid.uuid4().hex

    async def unreachable(*args, **kwargs):
        raise ConnectionError("Redis went away")

    async def run():
        feed = RedisEventFeed(redis_url, prefix)
        if end_unreadable:
            feed.redis.xrevrange = unreachable
        try:
            return await open_then_publish(bus, feed, job_id, pause)
        finally:
            await feed.close()

    try:
        return asyncio.run(run())
    finally:
        bus.redis.delete(prefix + job_id)
        bus.close()


def test_redis_feed_opened_without_history_starts_at_the_streams_end(redis_url):
    assert redis_open_then_publish(redis_url) == [5.0, 6.0, 7.0]


def test_redis_feed_that_cannot_find_the_streams_end_replays_no_history(redis_url):
    # not the five published before it opened (it starts from its host's clock: 50 ms before is history)
    assert redis_open_then_publish(redis_url, end_unreadable=True, pause=0.05) == [5.0, 6.0, 7.0]
