"""The one place a node's progress is published: events for live readers and the node's row in the database.

A node's progress reaches here from several sources: the task's own reports (sub-steps mapped into ranges, some of
which overlap: a TTS of more than 20 chunks reports chunk 21 at 0.96, then "resampling" at 0.95), the queue's relay
of a worker's events (a worker's "started" is a report of 0), and reports from more than one thread. Whatever they
say, what goes out never decreases within one attempt of the node. A genuine restart is a new attempt, numbered, from
0: the control plane starting the node (a first run, a resume, a retry, a takeover) or, within that, another worker
starting the task again after the first one died (`restart`).

The database is written at most every PROGRESS_DB_INTERVAL seconds per node, and the last report of a burst always
follows within that interval (a trailing write): a snapshot read between two reports is at most that far behind the
events. Writes name their attempt, so a driver that lost the job never overwrites its successor's progress.

Each running node's event carries its time left (spinbot.state.time_left.TimeLeft, measured here from the reports
as they arrive), and its row the time it should end: the CLI, the API's clients and the web page show that one
estimate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from spinbot.state import store as st
from spinbot.state.events import Event, EventBus
from spinbot.state.progress import job_progress, node_part, node_share
from spinbot.state.time_left import TimeLeft

log = logging.getLogger(__name__)

PROGRESS_DB_INTERVAL = 0.25  # seconds between progress writes to the database, per node


class JobProgress:
    """A job's overall progress while this process drives it: its nodes' shares weighted by their tasks'
    (spinbot.state.progress), never below the highest value already published or recorded."""

    def __init__(self, job: st.JobView):
        self._lock = threading.Lock()
        self._parts = {n.node_id: node_part(n.task, n.status, n.progress) for n in job.nodes}
        self._best = job.progress if job.status != st.SUCCEEDED else 0.0

    def update(self, node_id: str, share: float) -> float:
        """Record one node's share; returns the job's progress (a running job's: below 1.0)."""
        with self._lock:
            self._parts[node_id] = (self._parts[node_id][0], share)
            self._best = job_progress(st.RUNNING, self._parts.values(), self._best)
            return self._best

    @property
    def value(self) -> float:
        with self._lock:
            return self._best


class NodeProgress:
    """One node's progress from its start to its end in this process; callable as a task's report(fraction,
    message)."""

    def __init__(
        self,
        events: EventBus,
        jobs: st.JobStore,
        job: JobProgress,
        ids: tuple[str, str],
        attempt: int,
        is_current: Callable[[], bool] = lambda: True,
    ):
        self.events, self.jobs, self.job = events, jobs, job
        self.job_id, self.node_id = ids
        self.attempt = attempt
        self.is_current = is_current  # False once this process lost the job: it publishes nothing more
        self.fraction = 0.0
        self.message: str | None = None
        self.left = TimeLeft()  # this attempt's time left, from its reports
        self._lock = threading.Lock()  # one report at a time: events go out in the order of their values
        self._db_lock = threading.Lock()
        self._written_at = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    def __call__(self, fraction: float, message: str) -> None:
        self.report(fraction, message)

    def report(self, fraction: float, message: str) -> None:
        """A report from the running node: published no lower than this attempt's last one."""
        with self._lock:
            if self._closed or not self.is_current():
                return
            self.fraction = max(self.fraction, min(max(fraction, 0.0), 1.0))
            self.message = message
            self.left.report(self.fraction, time.monotonic())
            self._publish(st.RUNNING, message)
            due = time.monotonic() - self._written_at >= PROGRESS_DB_INTERVAL
            if not due:
                self._schedule_trailing_write()
        if due:
            self._write()

    def waiting(self, message: str) -> None:
        """Why the node, still queued, has not started (no worker serves its queue): the state stays queued; the
        message shows in the event, the node's row, the CLI's line and the page until a worker starts it."""
        with self._lock:
            if self._closed or not self.is_current() or self.message is not None:
                return  # a report came: the node runs already
            self._publish(st.QUEUED, message)
        self.jobs.node_waiting(self.job_id, self.node_id, message, attempt=self.attempt)

    def restart(self, message: str) -> None:
        """The node's work began again from nothing (another worker took the task over): the next attempt."""
        with self._lock:
            if self._closed or not self.is_current():
                return
            attempt = self.jobs.node_restarted(self.job_id, self.node_id, self.attempt, message)
            if attempt is None:
                return  # another driver started the node meanwhile: its attempt, not ours
            log.warning(
                "node started again",
                extra={"job_id": self.job_id, "node_id": self.node_id, "attempt": attempt, "reason": message},
            )
            self.attempt, self.fraction, self.message = attempt, 0.0, message
            self.left = TimeLeft()
            self._publish(st.RUNNING, message)

    def settle(self) -> None:
        """The latest report to the database now, before the node's final state is recorded (which stops progress
        writes): a failed node keeps the progress it reached."""
        with self._lock:
            self._cancel_trailing_write()
        self._write()

    def state(self, status: str, message: str | None = None) -> None:
        """Publish a change of the node's state with its progress so far (1.0 once it succeeded); a final state
        ends the attempt: later reports are dropped."""
        with self._lock:
            if status in st.FINAL_STATES:
                self._closed = True
                self._cancel_trailing_write()
            if status == st.SUCCEEDED:
                self.fraction = 1.0
            self._publish(status, message)
        if status == st.SUCCEEDED:
            self.jobs.raise_job_progress(self.job_id, self.job.value)

    def _publish(self, status: str, message: str | None) -> None:
        share = node_share(status, self.fraction)
        event = Event(
            self.job_id,
            "node",
            status,
            self.node_id,
            progress=round(self.fraction, 4),
            message=message,
            attempt=self.attempt,
            job_progress=self.job.update(self.node_id, share),
            seconds_left=self._seconds_left() if status == st.RUNNING else None,
        )
        self.events.publish(event)

    def _seconds_left(self) -> float | None:
        seconds = self.left.seconds(time.monotonic())
        return None if seconds is None else round(seconds, 1)

    # ---- the database ----------------------------------------------------------------------------------------
    def _schedule_trailing_write(self) -> None:
        if self._timer is None:
            delay = max(0.0, PROGRESS_DB_INTERVAL - (time.monotonic() - self._written_at))
            self._timer = threading.Timer(delay, self._write_later)
            self._timer.daemon = True
            self._timer.start()

    def _cancel_trailing_write(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write_later(self) -> None:
        try:
            self._write()
        except Exception as err:  # noqa: BLE001 - progress is a live view: the next report writes again
            log.warning("node progress not recorded", extra={"job_id": self.job_id, "error": str(err)})

    def _write(self) -> None:
        """The latest report to the node's row (whoever calls it last writes the newest value)."""
        with self._db_lock:
            with self._lock:
                self._timer = None
                if self._closed or self.message is None:
                    return  # nothing reported yet (a settle of a node still queued): its row says so already
                self._written_at = time.monotonic()
                values = (self.fraction, self.message, self.attempt, self.job.value, self._seconds_left())
            fraction, message, attempt, overall, left = values
            self.jobs.node_progress(
                self.job_id, self.node_id, fraction, message, attempt=attempt, job_progress=overall, seconds_left=left
            )
