"""Runs jobs in background threads of the API process (the control plane); resumes unfinished ones at start."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from spinbot.control.runner import Runner

log = logging.getLogger(__name__)


class JobExecutor:
    def __init__(self, runner: Runner, threads: int):
        self.runner = runner
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spinbot-job")
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, job_id: str) -> bool:
        """Run a job unless it is already running here; returns whether it was scheduled."""
        with self._lock:
            if job_id in self._active:
                return False
            self._active.add(job_id)
        self.pool.submit(self._run, job_id)
        return True

    def _run(self, job_id: str) -> None:
        try:
            self.runner.run(job_id)
        except Exception:  # runner.run records failures itself; this guards the thread
            log.exception("job thread crashed", extra={"job_id": job_id})
        finally:
            with self._lock:
                self._active.discard(job_id)

    def resume_unfinished(self) -> list[str]:
        ids = self.runner.jobs.unfinished_job_ids()
        for job_id in ids:
            self.submit(job_id)
        if ids:
            log.info("resuming unfinished jobs", extra={"jobs": ids})
        return ids

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
