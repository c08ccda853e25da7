"""`spinbot worker`: serve python-plane tasks from the Redis queues until SIGTERM.

One BullMQ worker per queue, one job at a time on each; tasks run in threads of this one process, so models
loaded by a backend (model_cache) stay in memory for the next job.

Stopping: the first SIGTERM (or Ctrl-C) stops taking jobs and lets the running ones finish; a second one stops
the running tasks at their next progress call and puts their jobs back in the queue. A worker killed outright
(SIGKILL, a lost machine) stops renewing its job locks, and another worker takes the jobs over once the lock
expires (queue_lock_seconds).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from bullmq import Worker
from bullmq.custom_errors import DelayedError

from spinbot.models.selection import refuse_on_problems
from spinbot.queue.config import QueueOptions
from spinbot.queue.keys import BULL_PREFIX, worker_key
from spinbot.settings import Settings, get_settings
from spinbot.storage.base import open_store
from spinbot.worker.executor import REQUEUE, NodeExecutor
from spinbot.worker.gpu_group import group_devices, start_worker_group, stop_worker_group
from spinbot.worker.heartbeat import WorkerState, beat
from spinbot.worker.model_cache import get_model_cache
from spinbot.worker.registry import install_extra_tasks

log = logging.getLogger(__name__)

CLOSE_CHECK_SECONDS = 1.0  # stopping: how long an idle queue's worker may take to close before its fetch is forced


class WorkerService:
    def __init__(self, settings: Settings, queues: list[str]):
        self.settings = settings
        self.options = QueueOptions.from_settings(settings)
        self.queues = queues
        self.state = WorkerState(queues)
        self.executor = NodeExecutor(
            redis.Redis.from_url(self.options.redis_url, socket_connect_timeout=3, socket_timeout=10),
            open_store(settings.resolved_storage_url),
            self.state,
            self.options.result_ttl_seconds,
            self.options.redis_retry_seconds,
            self.options.redis_url,
        )
        self._stopping: asyncio.Event | None = None
        self.bull: dict[str, Worker] = {}
        self.runs: dict[str, asyncio.Future] = {}
        self.restarts = 0

    async def serve(self) -> None:
        self._stopping = asyncio.Event()
        self.bull = {queue: self._bull_worker(queue) for queue in self.queues}
        self.runs = {queue: asyncio.ensure_future(w.run()) for queue, w in self.bull.items()}
        background = [asyncio.ensure_future(self._heartbeat()), asyncio.ensure_future(self._watchdog())]
        self._handle_signals()
        log.info("worker ready", extra={"worker": self.state.id, "queues": self.queues})
        await self._stopping.wait()
        log.info("worker stopping: running jobs finish first", extra={"worker": self.state.id})
        await self._close_queues()
        # A closed worker's run() ends at once, unless it never reached Redis: then it waits in its first call
        await asyncio.wait(self.runs.values(), timeout=CLOSE_CHECK_SECONDS)
        for run in self.runs.values():
            run.cancel()
        await asyncio.gather(*self.runs.values(), return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self._forget_heartbeat()
        log.info("worker stopped", extra={"worker": self.state.id, "finished": self.state.info.finished})

    async def _close_queues(self) -> None:
        """Close every queue's BullMQ worker, letting its running task finish. BullMQ's close() also waits for the
        queue's fetch in flight, which it retries for as long as Redis is unreachable (a worker whose Redis was down
        never stopped, even on a second SIGTERM): a queue that runs no task here and has not closed within
        CLOSE_CHECK_SECONDS is closed with force, which interrupts only that fetch."""
        closing = [asyncio.ensure_future(worker.close()) for worker in self.bull.values()]
        forced: set[str] = set()
        while True:
            await asyncio.wait(closing, timeout=CLOSE_CHECK_SECONDS)
            if all(task.done() for task in closing):
                break
            busy = {node.queue for node in self.state.snapshot([]).running}
            for queue, worker in self.bull.items():
                if queue not in busy and queue not in forced and not worker.closed:
                    forced.add(queue)
                    closing.append(asyncio.ensure_future(worker.close(force=True)))
        for task in closing:
            if task.exception() is not None:
                log.warning("queue worker did not close cleanly", extra={"error": str(task.exception())})

    def _bull_worker(self, queue: str) -> Worker:
        opts = {
            "connection": self.options.redis_url,
            "prefix": BULL_PREFIX,
            "autorun": False,
            "name": self.state.id,
            "concurrency": 1,
            **self.options.worker_opts(),
        }
        return Worker(queue, self._processor(queue), opts)

    async def _watchdog(self) -> None:
        """Restart a queue's BullMQ worker that sits idle while its queue has jobs waiting.

        Seen here (bullmq 3.4.4, rarely): a worker's fetch loop stops waiting on the queue's marker and never takes
        a job again, while the process and its heartbeat live on. Jobs would wait forever; a fresh BullMQ worker on
        the same queue takes them. Two looks in a row, `worker_watchdog_seconds` apart, so a job that was just
        added and is about to be taken does not trigger it.
        """
        interval = self.settings.worker_watchdog_seconds
        suspects: set[str] = set()
        client = aioredis.from_url(self.options.redis_url, socket_connect_timeout=3, socket_timeout=10)
        try:
            while True:
                await asyncio.sleep(interval)
                await self._watch_once(client, suspects)
        finally:
            await client.aclose()

    async def _watch_once(self, client: aioredis.Redis, suspects: set[str]) -> None:
        for queue in self.queues:
            if not await self._idle_with_jobs_waiting(client, queue):
                suspects.discard(queue)
            elif queue in suspects:
                suspects.discard(queue)
                await self._restart_bull_worker(queue)
            else:
                suspects.add(queue)

    async def _idle_with_jobs_waiting(self, client: aioredis.Redis, queue: str) -> bool:
        if any(node.queue == queue for node in self.state.snapshot([]).running):
            return False
        try:
            counts = await client.eval(
                "return redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])",
                2,
                f"{BULL_PREFIX}:{queue}:wait",
                f"{BULL_PREFIX}:{queue}:prioritized",
            )
        except Exception:  # noqa: BLE001 - Redis away: the worker's own retries handle that
            return False
        return int(counts) > 0

    async def _restart_bull_worker(self, queue: str) -> None:
        log.warning("queue worker idle while jobs wait: restarting it", extra={"worker": self.state.id, "queue": queue})
        old, run = self.bull[queue], self.runs[queue]
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        try:
            await asyncio.wait_for(old.close(force=True), timeout=10)
        except Exception as err:  # noqa: BLE001 - a stuck worker is replaced whatever its close raised
            log.warning("old queue worker did not close cleanly", extra={"queue": queue, "error": str(err)})
        self.restarts += 1
        self.bull[queue] = self._bull_worker(queue)
        self.runs[queue] = asyncio.ensure_future(self.bull[queue].run())

    def _processor(self, queue: str):
        async def process(job: Any, token: str) -> str:
            # A thread keeps the event loop free to renew the job's lock while the task runs for hours.
            outcome = await asyncio.to_thread(self.executor.handle, job.data, queue)
            if outcome == REQUEUE:
                await job.moveToDelayed(int(time.time() * 1000), token)  # due now: back in line for any worker
                raise DelayedError()
            return outcome

        return process

    def _handle_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread (tests run a service in a thread)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)

    def _on_stop_signal(self) -> None:
        assert self._stopping is not None, "run() sets the event before the handlers"
        if not self._stopping.is_set():
            self._stopping.set()
        else:
            log.info("worker stopping now: running jobs go back to the queue", extra={"worker": self.state.id})
            self.executor.stop_now.set()

    async def _heartbeat(self) -> None:
        interval = self.settings.worker_heartbeat_seconds
        client = aioredis.from_url(self.options.redis_url, socket_connect_timeout=3, socket_timeout=10)
        try:
            while True:
                models = [f"{path} ({dtype})" for path, dtype in get_model_cache().keys()]
                try:
                    await beat(client, self.state.snapshot(models), ttl_seconds=max(3 * interval, 1.0))
                except Exception as err:  # noqa: BLE001 - Redis away: try again next beat
                    log.warning("heartbeat not written", extra={"error": str(err)})
                await asyncio.sleep(interval)
        finally:
            await client.aclose()

    async def _forget_heartbeat(self) -> None:
        client = aioredis.from_url(self.options.redis_url, socket_connect_timeout=3, socket_timeout=3)
        try:
            await client.delete(worker_key(self.state.id))
        except Exception:  # noqa: BLE001 - the heartbeat expires on its own
            pass
        finally:
            await client.aclose()


def run_worker(queues: list[str] | None = None, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    devices = group_devices(settings)  # --gpus: refused here, before anything starts
    queues = queues or [q.strip() for q in settings.worker_queues.split(",") if q.strip()]
    refuse_on_problems(settings, queues)  # the native backends' model files, before any job is taken
    extra = install_extra_tasks(settings.extra_tasks)
    if extra:
        log.info("extra tasks installed", extra={"tasks": extra})
    if devices:
        start_worker_group(devices)
        log.info("transformer group started", extra={"devices": [str(d) for d in devices]})
    try:
        asyncio.run(WorkerService(settings, queues).serve())
    finally:
        if devices:
            stop_worker_group()
