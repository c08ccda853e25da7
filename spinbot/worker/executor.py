"""Run one delivered node (in a thread of the worker) and store its one result.

A delivery of a node that already has a result (a redelivery after a crash between storing the result and telling
the queue, or a stray duplicate) does not run the task again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.errors import SpinBotError
from spinbot.queue.channel import NodeChannel
from spinbot.queue.outage import REDIS_ERRORS, ride_out_outage
from spinbot.queue.records import CANCELLED, FAILED, PROGRESS, STARTED, SUCCEEDED, NodeResult, Status, event, one_line
from spinbot.storage.base import ArtifactStore
from spinbot.tasks.base import Cancelled, Superseded
from spinbot.worker.heartbeat import RunningNode, WorkerState

log = logging.getLogger(__name__)

CANCEL_CACHE_SECONDS = 0.2  # tasks may call progress often; Redis is asked at most this often

# handle() outcomes
STORED, ALREADY_FINISHED, REQUEUE, SUPERSEDED = "stored", "already-finished", "requeue", "superseded"


class CancelCheck:
    """is_cancelled for a task: the node's cancel flag (read at most every 0.2 s) or the worker stopping now."""

    def __init__(self, node: NodeChannel, stop_now: threading.Event):
        self.node = node
        self.stop_now = stop_now
        self.flag = False
        self.read_at = 0.0

    def __call__(self) -> bool:
        if self.stop_now.is_set():
            return True
        now = time.monotonic()
        if not self.flag and now - self.read_at >= CANCEL_CACHE_SECONDS:
            self.read_at = now
            try:
                self.flag = self.node.cancel_requested()
            except REDIS_ERRORS:
                pass  # Redis away for a moment: keep running rather than fail the task
        return self.flag


class NodeExecutor:
    def __init__(
        self,
        client: redis.Redis,
        store: ArtifactStore,
        state: WorkerState,
        ttl_seconds: int,
        redis_retry_seconds: float,
        redis_url: str,
    ):
        self.client = client
        self.store = store
        self.state = state
        self.ttl = ttl_seconds
        self.redis_retry_seconds = redis_retry_seconds
        self.redis_url = redis_url
        self.stop_now = threading.Event()  # set on a second SIGTERM: running tasks stop and go back to the queue

    def handle(self, data: dict[str, Any], queue: str) -> str:
        request = TaskRequest.model_validate(data["request"])
        node = NodeChannel(self.client, request.job_id, request.node_id, self.ttl)
        if node.result() is not None:
            node.announce_done()
            log.info("node already finished; not run again", extra=_ids(request))
            return ALREADY_FINISHED
        running = RunningNode(
            job_id=request.job_id, node_id=request.node_id, task=request.task, queue=queue, since=time.time()
        )
        self.state.started(running)
        try:
            result = self._run(request, node, queue, float(data.get("enqueued_at", 0.0)), running.since)
            if isinstance(result, str):  # SUPERSEDED: the run that took the node over stores the result
                return result
            if result is None:
                return REQUEUE
            self._store(node, result)
            return STORED
        finally:
            self.state.finished(running)

    def _run(
        self, request: TaskRequest, node: NodeChannel, queue: str, enqueued_at: float, started_at: float
    ) -> NodeResult | str | None:
        """The task's result, None when this worker was told to stop now (the job goes back to the queue), or
        SUPERSEDED when the task found that another run of the node took it over (this worker's queue lock ran out
        while it rendered: the queue gave the job to another worker)."""
        cancel = CancelCheck(node, self.stop_now)
        node.publish(event(STARTED, worker=self.state.id))
        log.info("node started", extra=_ids(request))
        try:
            if cancel():
                raise Cancelled(f"node '{request.node_id}' cancelled before it started")
            output = execute_task(request, self.store, self._reporter(node), cancel)
        except Cancelled as err:
            if self.stop_now.is_set() and not cancel.flag:
                return None
            return self._result(CANCELLED, error=str(err))
        except Superseded as err:
            log.warning(
                "node taken over by another run: stopped, no result stored", extra={**_ids(request), "reason": str(err)}
            )
            return SUPERSEDED
        except Exception as err:
            # Expected failures (bad input, missing backend) are one line; anything else keeps its traceback.
            log.warning(
                "node failed",
                extra={**_ids(request), "error": one_line(err)},
                exc_info=not isinstance(err, SpinBotError),
            )
            return self._result(FAILED, error=one_line(err))
        finished_at = time.time()
        output.meta["queue"] = {
            "queue": queue,
            "worker": self.state.id,
            "enqueued_at": enqueued_at,
            "started_at": started_at,
            "finished_at": finished_at,
            "wait_seconds": round(started_at - enqueued_at, 6),
        }
        log.info("node finished", extra={**_ids(request), "seconds": round(finished_at - started_at, 3)})
        return self._result(SUCCEEDED, output=output)

    def _result(self, status: Status, **fields: Any) -> NodeResult:
        return NodeResult(status=status, worker=self.state.id, **fields)

    def _reporter(self, node: NodeChannel):
        def report(fraction: float, message: str) -> None:
            try:
                node.publish(event(PROGRESS, fraction=round(fraction, 4), message=message))
            except REDIS_ERRORS as err:  # progress is a live view: never fail a task over it
                log.warning("progress not published", extra={"error": str(err)})

        return report

    def _store(self, node: NodeChannel, result: NodeResult) -> None:
        """Store the result, riding out a short Redis outage: the work behind it may have taken hours."""
        ride_out_outage(
            lambda: node.save_result(result), self.redis_retry_seconds, self.redis_url, "storing a node result"
        )


def _ids(request: TaskRequest) -> dict[str, str]:
    return {"job_id": request.job_id, "node_id": request.node_id, "task": request.task}
