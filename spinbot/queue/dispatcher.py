"""QueueDispatcher: hand a python-plane node to the Redis queue and wait for its result.

One node of one job is one queue job whose id is the idempotency key (job id + node id), so:
- a node that is queued or running is never added twice: a second run() waits for the same job;
- a node that succeeded is never run again: run() returns the stored result;
- a node that failed or was cancelled runs again on the next run() (the control plane retrying it).
Progress and the result travel through per-node Redis records (spinbot.queue.channel).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from spinbot.control.dispatch import Dispatcher, TaskRequest, report_restart, report_waiting
from spinbot.queue.bridge import LoopThread
from spinbot.queue.bull import LIVE_STATES, BullQueues
from spinbot.queue.channel import NodeChannel
from spinbot.queue.config import PRIORITY_NORMAL, QueueOptions, check_priority
from spinbot.queue.errors import QueueJobLost, WorkerTaskError
from spinbot.queue.keys import bull_job_id
from spinbot.queue.outage import ride_out_outage
from spinbot.queue.records import CANCELLED, DONE, PROGRESS, STARTED, SUCCEEDED, NodeResult
from spinbot.settings import Settings, get_settings
from spinbot.tasks.base import Cancelled, NodeOutput
from spinbot.worker import heartbeat  # the module, not its names: heartbeat imports spinbot.queue (a cycle)

T = TypeVar("T")
log = logging.getLogger(__name__)

READ_BLOCK_MS = 250  # the longest a cancel request waits to be noticed, besides is_cancelled's own cost
CANCEL_CHECK_SECONDS = 0.2
QUEUE_CHECK_SECONDS = 1.0  # how often the waiter asks BullMQ whether the job is still there
CANCEL_GRACE_SECONDS = 30.0  # a task that ignores cancellation this long is reported cancelled anyway
BULL_CALL_SECONDS = 10.0
MAX_READDS = 3  # times a job lost by the queue (Redis restarted empty) is added again
FINISHING_SECONDS = 10.0  # a worker that stored a result hands its job back to BullMQ within this
WORKER_CHECK_SECONDS = 3.0  # a node not started yet: how often the waiter looks for a live worker of its queue


class QueueDispatcher(Dispatcher):
    def __init__(self, options: QueueOptions, priorities: dict[str, int] | None = None):
        self.options = options
        self.priorities = dict(priorities or {})  # task -> priority (1 runs first)
        self.redis = redis.Redis.from_url(
            options.redis_url, socket_connect_timeout=3, socket_timeout=10, retry=Retry(NoBackoff(), 0)
        )
        self._loop = LoopThread()
        self._bull = BullQueues(options.redis_url)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> QueueDispatcher:
        return cls(QueueOptions.from_settings(settings or get_settings()))

    def run(
        self,
        request: TaskRequest,
        report: Callable[[float, str], None],
        is_cancelled: Callable[[], bool],
        *,
        priority: int | None = None,
    ) -> NodeOutput:
        """Enqueue (unless already queued, running or finished), relay progress, return the output or raise."""
        priority = check_priority(priority or request.priority or self.priorities.get(request.task, PRIORITY_NORMAL))
        node = self.channel(request)
        what = f"running node '{request.node_id}' of job {request.job_id}"
        result = self.ride_out(lambda: self.submit(request, node, priority), what)
        if result is None:
            result = _NodeWait(self, request, node, priority, report, is_cancelled).until_done(what)
        return _outcome(request, result)

    def ride_out(self, step: Callable[[], T], what: str) -> T:
        """step(), retried while Redis is away, up to redis_retry_seconds (spinbot.queue.outage)."""
        return ride_out_outage(step, self.options.redis_retry_seconds, self.options.redis_url, what)

    # ---- building blocks (also used by tests and the benchmark) ------------------------------------------------------
    def channel(self, request: TaskRequest) -> NodeChannel:
        return NodeChannel(self.redis, request.job_id, request.node_id, self.options.result_ttl_seconds)

    def route(self, request: TaskRequest) -> tuple[str, str]:
        """(queue name, queue job id) for a request."""
        return self.options.queue_for(request.task), bull_job_id(request.job_id, request.node_id)

    def submit(self, request: TaskRequest, node: NodeChannel, priority: int) -> NodeResult | None:
        """Add the node's job unless one is live; return the stored result if the node already succeeded."""
        queue, job_id = self.route(request)
        state = self.queue_state(request)
        # Read the result after the state: a run stores its result before its job leaves the queue.
        result = node.result()
        if result is not None and result.status == SUCCEEDED:
            return result
        if result is not None and state in LIVE_STATES:
            state = self._until_gone(request)  # the failed run's job is still being closed by its worker
        if state in LIVE_STATES:
            return None  # queued or running (perhaps for a control plane that restarted): wait for that one
        if state != "unknown":
            self.bull(lambda: self._bull.remove(queue, job_id))  # a failed job keeps its id taken
        if not node.start_new_run():
            return node.result()  # it succeeded just now
        self.enqueue(request, priority)
        return None

    def _until_gone(self, request: TaskRequest) -> str:
        deadline = time.monotonic() + FINISHING_SECONDS
        state = self.queue_state(request)
        while state in LIVE_STATES and time.monotonic() < deadline:
            time.sleep(0.02)
            state = self.queue_state(request)
        return state

    def enqueue(self, request: TaskRequest, priority: int) -> None:
        """Add the job to its queue; a job with the same id that is still there makes this a no-op."""
        queue, job_id = self.route(request)
        data = {"request": request.model_dump(mode="json"), "enqueued_at": time.time()}
        self.bull(lambda: self._bull.add(queue, job_id, request.task, data, priority))

    def queue_state(self, request: TaskRequest) -> str:
        queue, job_id = self.route(request)
        return self.bull(lambda: self._bull.state(queue, job_id))

    def withdraw(self, request: TaskRequest) -> bool:
        """Take a job that no worker has started out of its queue; False if it is running or gone."""
        queue, job_id = self.route(request)
        if self.queue_state(request) not in ("waiting", "prioritized", "delayed"):
            return False
        return self.bull(lambda: self._bull.remove(queue, job_id))  # False: a worker's lock stops the removal

    def failed_reason(self, request: TaskRequest) -> str:
        queue, job_id = self.route(request)
        return self.bull(lambda: self._bull.failed_reason(queue, job_id))

    def bull(self, make):
        """Run a BullMQ coroutine (from make()) on the dispatcher's event loop and return its result."""
        return self._loop.call(make, BULL_CALL_SECONDS)

    def close(self) -> None:
        try:
            self._loop.call(self._bull.close, 5)
        except Exception:  # noqa: BLE001 - closing after Redis went away: nothing left to flush
            pass
        self._loop.close()
        self.redis.close()


class _NodeWait:
    """Waiting for one node: relays its events, forwards a cancel request, notices a job the queue lost."""

    def __init__(
        self,
        dispatcher: QueueDispatcher,
        request: TaskRequest,
        node: NodeChannel,
        priority: int,
        report: Callable[[float, str], None],
        is_cancelled: Callable[[], bool],
    ):
        self.dispatcher = dispatcher
        self.request = request
        self.node = node
        self.priority = priority
        self.report = report
        self.is_cancelled = is_cancelled
        self.last_id = "0"  # from the start: a reader that attaches late still gets the whole run
        self.starts = 0  # the worker runs of the node seen: each one after the first began the task again
        self.cancel_sent_at: float | None = None
        self.next_cancel_check = 0.0
        self.next_queue_check = time.monotonic() + QUEUE_CHECK_SECONDS
        self.next_worker_check = time.monotonic() + WORKER_CHECK_SECONDS
        self.unserved: bool | None = None  # whether the node's queue had no live worker at the last look
        self.readds = 0

    def until_done(self, what: str) -> NodeResult:
        while True:
            result = self.dispatcher.ride_out(self.step, what)
            if result is not None:
                return result

    def step(self) -> NodeResult | None:
        result = self.forward_cancel() or self.relay_events()
        now = time.monotonic()
        if result is None and now >= self.next_queue_check:
            self.next_queue_check = now + QUEUE_CHECK_SECONDS
            result = self.check_queue()
        if result is None and not self.starts and now >= self.next_worker_check:
            self.next_worker_check = now + WORKER_CHECK_SECONDS
            self.check_workers()
        if result is None and self.cancel_sent_at and now - self.cancel_sent_at > CANCEL_GRACE_SECONDS:
            result = NodeResult(
                status=CANCELLED,
                error=f"node '{self.request.node_id}' cancelled; its worker did "
                f"not stop within {CANCEL_GRACE_SECONDS:.0f} s",
            )
        return result

    def relay_events(self) -> NodeResult | None:
        for entry_id, fields in self.node.read(self.last_id, READ_BLOCK_MS):
            self.last_id = entry_id
            kind = fields.get("type")
            if kind == PROGRESS:
                self.report(float(fields.get("fraction", 0.0)), fields.get("message", ""))
            elif kind == STARTED:
                self.relay_start(fields.get("worker", "?"))
            elif kind == DONE:
                result = self.node.result()
                if result is not None:
                    return result
        return None

    def relay_start(self, worker: str) -> None:
        """A worker started the task. A later start than the first is a restart from nothing (its worker died or
        stopped and the queue gave the task to another): a new attempt, not the last one's progress going back."""
        self.starts += 1
        if self.starts == 1:
            self.report(0.0, f"started on worker {worker}")
        else:
            report_restart(self.report, f"started again on worker {worker}: the last run of the task stopped")

    def check_workers(self) -> None:
        """A node that no worker has started: say so when no live worker (heartbeat) serves its queue, since it
        waits until one starts (a `spinbot run` or a page that showed "queued" and nothing more, for ever)."""
        queue, _ = self.dispatcher.route(self.request)
        unserved = not any(queue in worker.queues for worker in heartbeat.list_workers(self.dispatcher.redis))
        if unserved == bool(self.unserved):
            return
        self.unserved = unserved
        if unserved:
            log.warning(
                "no worker serves the node's queue: it waits until one starts",
                extra={
                    "job_id": self.request.job_id,
                    "node_id": self.request.node_id,
                    "queue": queue,
                    "start_one": f"spinbot worker --queues {queue}",
                },
            )
            report_waiting(self.report, f"waiting for a worker: none serves queue '{queue}'")
        else:
            report_waiting(self.report, f"waiting in queue '{queue}'")

    def forward_cancel(self) -> NodeResult | None:
        """Set the node's cancel flag once is_cancelled() turns true; withdraw the job if no worker has it yet."""
        now = time.monotonic()
        if self.cancel_sent_at is not None or now < self.next_cancel_check:
            return None
        self.next_cancel_check = now + CANCEL_CHECK_SECONDS
        if not self.is_cancelled():
            return None
        self.node.request_cancel()
        self.cancel_sent_at = now
        if not self.dispatcher.withdraw(self.request):
            return None  # running: the worker sees the flag at the task's next progress call
        cancelled = NodeResult(status=CANCELLED, error=f"node '{self.request.node_id}' cancelled before it started")
        self.node.save_result(cancelled, only_if_absent=True)
        return self.node.result()

    def check_queue(self) -> NodeResult | None:
        """The job should be live until its result is stored; if it is not, say why (or add it again)."""
        state = self.dispatcher.queue_state(self.request)
        if state in LIVE_STATES:
            return None
        result = self.node.result()
        if result is not None:
            return result
        if state == "failed":  # e.g. its workers died more often than queue_max_stalled allows
            reason = self.dispatcher.failed_reason(self.request)
            return NodeResult(status="failed", error=f"the queue gave up on it: {reason}")
        return self.readd(state)

    def readd(self, state: str) -> NodeResult | None:
        self.readds += 1
        if self.readds > MAX_READDS:
            raise QueueJobLost(
                f"the queue lost node '{self.request.node_id}' of job {self.request.job_id} "
                f"{MAX_READDS} times (Redis restarted without its data?)"
            )
        log.warning(
            "queue job vanished; adding it again",
            extra={"job_id": self.request.job_id, "node_id": self.request.node_id, "state": state},
        )
        return self.dispatcher.submit(self.request, self.node, self.priority)


def _outcome(request: TaskRequest, result: NodeResult) -> NodeOutput:
    if result.status == SUCCEEDED and result.output is not None:
        return result.output
    if result.status == CANCELLED:
        raise Cancelled(result.error or f"node '{request.node_id}' cancelled")
    raise WorkerTaskError(result.error or "the task failed on its worker without a message")
