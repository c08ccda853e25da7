"""Runs jobs in background threads of the API process (the control plane).

At start, and then every half lease time, it takes over the unfinished jobs that no process holds: never leased,
released, or whose owner stopped renewing its lease (it died or hung). A job another process drives is left alone,
so any number of API processes and `spinbot run`s can share one database without a job running twice. When
SPINBOT_JOB_RETENTION_DAYS is set, the same thread deletes expired finished jobs once an hour. It also schedules
the webhook attempts due in the database (spinbot.control.callbacks): new ones recorded by another process, retries
and attempts a stopped process left.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from spinbot.control.callbacks import CallbackSender
from spinbot.control.runner import Runner
from spinbot.errors import Conflict, first_line
from spinbot.queue.outage import REDIS_ERRORS
from spinbot.state.store import ORPHAN_STATES

log = logging.getLogger(__name__)

RETENTION_SWEEP_SECONDS = 3600.0
# On shutdown, how long running jobs get to reach their next progress report and let go (then the process exits
# anyway; a job whose thread was still busy keeps its lease until it expires, a lease time later)
SHUTDOWN_WAIT_SECONDS = 20.0


class JobExecutor:
    def __init__(self, runner: Runner, threads: int, callbacks: CallbackSender | None = None):
        self.runner, self.callbacks = runner, callbacks
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spinbot-job")
        self._active: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._next_retention = 0.0

    def submit(self, job_id: str) -> bool:
        """Run a job unless it is already running here; returns whether it was scheduled."""
        with self._lock:
            if job_id in self._active:
                return False
            self._active[job_id] = self.pool.submit(self._run, job_id)
        return True

    def _run(self, job_id: str) -> None:
        try:
            self.runner.run(job_id)
        except Conflict as err:  # another process took it first: it is theirs to finish
            log.info("job left to its owner", extra={"job_id": job_id, "reason": str(err)})
        except REDIS_ERRORS as err:  # its events and queue are in Redis: taken again once Redis answers
            log.warning(
                "job waits for Redis: taken again at the next look for unfinished jobs",
                extra={"job_id": job_id, "error": first_line(err)},
            )
        except Exception:  # runner.run records failures itself; this guards the thread
            log.exception("job thread crashed", extra={"job_id": job_id})
        finally:
            with self._lock:
                self._active.pop(job_id, None)

    def resume_unfinished(self) -> list[str]:
        """Take over the orphaned jobs now, then keep looking for more in the background."""
        ids = self.claim_orphans()
        self._sweep_callbacks()
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="spinbot-job-sweeper", daemon=True)
            self._sweeper.start()
        return ids

    def claim_orphans(self) -> list[str]:
        """Lease and schedule every unfinished job that no process holds; returns the ones taken."""
        taken = [
            job_id
            for job_id in self.runner.leases.store.claimable(ORPHAN_STATES)
            if self.runner.leases.acquire(job_id) and self.submit(job_id)
        ]
        if taken:
            log.info("resuming unfinished jobs", extra={"jobs": taken})
        return taken

    def _sweep(self) -> None:
        while not self._stop.wait(self.runner.settings.job_lease_seconds / 2):
            try:
                self.claim_orphans()
                self._sweep_callbacks()
                self._expire_old_jobs()
            except Exception:  # the database may be away for a while: try again next round
                log.exception("job sweep failed")

    def _sweep_callbacks(self) -> None:
        if self.callbacks is not None:
            self.callbacks.sweep()

    def _expire_old_jobs(self) -> None:
        days = self.runner.settings.job_retention_days
        if days is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_SWEEP_SECONDS
        from spinbot.control.lifecycle import expire_jobs

        expire_jobs(self.runner, days)

    def shutdown(self, wait_seconds: float = SHUTDOWN_WAIT_SECONDS) -> None:
        """Hand every job back: a queued one at once, a running one at its next progress report. Its state stays
        what it was (running, not failed), so the next API process takes it over and resumes it from its last
        finished node; without this, a Ctrl-C of `spinbot serve` failed the jobs it was rendering."""
        self._stop.set()
        if self.callbacks is not None:  # no new attempt: those due stay in the database for the next process
            self.callbacks.close()
        with self._lock:
            queued = [job_id for job_id, future in self._active.items() if future.cancel()]
            running = {job_id: future for job_id, future in self._active.items() if job_id not in queued}
        for job_id in queued:  # never started here: let another process have them at once
            self.runner.leases.release(job_id)
        self.runner.leases.give_up(list(running))
        if running:
            log.info("handing running jobs back", extra={"jobs": list(running)})
            wait(list(running.values()), timeout=wait_seconds)
        self.pool.shutdown(wait=False, cancel_futures=True)
