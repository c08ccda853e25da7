"""The few BullMQ calls the dispatcher makes, on one connection that fails fast (the dispatcher retries)."""

from __future__ import annotations

import redis.asyncio as aioredis
from bullmq import Job, Queue
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from spinbot.queue.keys import BULL_PREFIX

LIVE_STATES = {"waiting", "prioritized", "active", "delayed", "waiting-children", "paused"}
FAILED_RETENTION = {"age": 24 * 3600}  # a failed job stays readable for a day: its reason is the error shown


class BullQueues:
    """BullMQ queues by name; every method runs on the dispatcher's event loop thread."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self._client: aioredis.Redis | None = None
        self._queues: dict[str, Queue] = {}

    def _queue(self, name: str) -> Queue:
        if self._client is None:  # created on the loop thread that uses it
            self._client = aioredis.from_url(
                self.redis_url,
                decode_responses=True,
                socket_connect_timeout=3,
                socket_timeout=10,
                retry=Retry(NoBackoff(), 0),
            )
        if name not in self._queues:
            self._queues[name] = Queue(name, {"connection": self._client, "prefix": BULL_PREFIX})
        return self._queues[name]

    async def add(self, queue: str, job_id: str, task: str, data: dict, priority: int) -> None:
        """Add unless a job with this id exists; BullMQ's own check makes the second add a no-op."""
        await self._queue(queue).add(
            task,
            data,
            {"jobId": job_id, "priority": priority, "removeOnComplete": True, "removeOnFail": FAILED_RETENTION},
        )

    async def state(self, queue: str, job_id: str) -> str:
        """waiting, prioritized, active, completed, failed, ... or unknown (no such job)."""
        return await self._queue(queue).getJobState(job_id)

    async def failed_reason(self, queue: str, job_id: str) -> str:
        job = await Job.fromId(self._queue(queue), job_id)
        return (job.failedReason if job else None) or "the queue failed the job"

    async def remove(self, queue: str, job_id: str) -> bool:
        """Remove a job that no worker holds; False if a worker has it (its lock stops the removal)."""
        return bool(await self._queue(queue).remove(job_id))

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
