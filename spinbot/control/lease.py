"""The leases one process holds on the jobs it drives, renewed by one heartbeat thread.

The Runner takes a job's lease before it runs the job (or when it creates it) and gives it up at the end; while it
holds it, a daemon thread renews every held lease each third of SPINBOT_JOB_LEASE_SECONDS. Another process (a
second `spinbot serve`, `spinbot run --resume`) can take the job only after the lease expired, that is after this
process stopped renewing it: it died, hung, or lost the database for a whole lease time. A process that finds it
lost a lease stops driving that job at once (LeaseLost) and records nothing more for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from spinbot.errors import Conflict
from spinbot.state.lease import LeaseStore

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This process no longer owns the job: another one took it over. Not a failure of the job."""


def process_owner_id() -> str:
    """Unique per process, and says where to look: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()[:36]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    def __init__(self, store: LeaseStore, seconds: float, owner: str | None = None):
        self.store = store
        self.seconds = seconds
        self.owner = owner or process_owner_id()
        self._renewed: dict[str, float] = {}  # held job -> time.monotonic() of its last successful renewal
        self._lost: set[str] = set()
        self._given_up: set[str] = set()  # still ours, being let go (shutdown): see give_up
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking and giving up ----------------------------------------------------------------------------------
    def acquire(self, job_id: str) -> bool:
        """Take the job's lease (free, expired or ours) and keep it renewed; False if another process holds it."""
        if not self.store.acquire(job_id, self.owner, self.seconds):
            return False
        self.adopt(job_id)
        return True

    def adopt(self, job_id: str) -> None:
        """Keep renewing a lease this process was just given (a job created with its lease). A job given up stays
        given up until released: the API's shutdown gives up a job whose thread has started but not yet taken the
        lease (Runner.run's require), and that take must not undo it (the job then ran to its end after the
        shutdown, in a thread nothing waited for)."""
        with self._lock:
            self._renewed[job_id] = time.monotonic()
            self._lost.discard(job_id)
        self._ensure_thread()

    def release(self, job_id: str) -> None:
        with self._lock:
            held = self._renewed.pop(job_id, None) is not None
            self._lost.discard(job_id)
            self._given_up.discard(job_id)
        if held:
            self.store.release(job_id, self.owner)

    def give_up(self, job_ids: list[str]) -> None:
        """Stop driving these jobs (the process is shutting down): each stops at its task's next progress report
        (LeaseLost, nothing recorded) and its lease is freed when the runner lets go, so another process takes the
        job over at once instead of a lease time later."""
        with self._lock:
            self._given_up.update(job_ids)

    def require(self, job_id: str, wait_if_silent: bool = False) -> None:
        """Raise Conflict naming the holder unless this process can take the job's lease; with wait_if_silent,
        first wait for a holder that has stopped renewing (it died) to let its lease run out."""
        if self.acquire(job_id) or (wait_if_silent and self.take_when_expired(job_id)):
            return
        raise Conflict(self.busy_message(job_id))

    def take_when_expired(self, job_id: str) -> bool:
        """Wait (one lease time at most) for the lease to expire and take it; False as soon as its holder renews
        it, which shows it is alive."""
        first = self.store.view(job_id)
        if first is not None and first.live:
            log.warning(
                "waiting for the job's lease to expire: its owner may have died",
                extra={"job_id": job_id, "owner": first.owner},
            )
        deadline = time.monotonic() + self.seconds + 1.0
        while first is not None and time.monotonic() < deadline:
            if self.acquire(job_id):
                return True
            lease = self.store.view(job_id)
            if lease is None or (lease.owner, lease.heartbeat_at) != (first.owner, first.heartbeat_at):
                return False  # renewed (alive) or taken by a third process
            time.sleep(min(0.2, self.seconds / 10))
        return False

    def busy_message(self, job_id: str) -> str:
        lease = self.store.view(job_id)
        if lease is None or not lease.live:
            return f"job {job_id} was just taken by another process"
        left = lease.seconds_left
        return (
            f"job {job_id} is being run by another process ({lease.owner}); it can be taken over if that "
            f"process stops renewing its lease, {left:.0f} s from now at the earliest"
        )

    # ---- checking ----------------------------------------------------------------------------------------------
    def check(self, job_id: str) -> None:
        """Raise LeaseLost if the job's lease is known lost or overdue (no database call: cheap enough for every
        progress report)."""
        with self._lock:
            renewed = self._renewed.get(job_id)
            lost = job_id in self._lost or renewed is None or time.monotonic() - renewed > self.seconds
            given_up = job_id in self._given_up
        if given_up and not lost:
            raise LeaseLost(f"job {job_id}: this process is shutting down; another one takes the job over")
        if lost:
            self._mark_lost(job_id)
            raise LeaseLost(f"job {job_id}: this process no longer holds its lease")

    def confirm(self, job_id: str) -> None:
        """Renew now and raise LeaseLost unless the lease is still ours (before a node starts: a node is only ever
        started by the job's current owner)."""
        self.check(job_id)
        if job_id not in self._renew([job_id]):
            raise LeaseLost(f"job {job_id}: another process took its lease over")

    def is_lost(self, job_id: str) -> bool:
        """Lost, or being let go: an error the job's task raises now is not the job's failure."""
        with self._lock:
            return job_id in self._lost or job_id in self._given_up

    # ---- the heartbeat -----------------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="spinbot-lease", daemon=True)
                self._thread.start()

    def _beat(self) -> None:
        while True:
            self._wake.wait(self.seconds / 3)
            self._wake.clear()
            with self._lock:
                held = list(self._renewed)
            if held:
                try:
                    self._renew(held)
                except Exception as err:  # noqa: BLE001 - the database is away: the leases stay ours until they run out
                    log.warning("job lease renewal failed", extra={"error": str(err), "jobs": held})

    def _renew(self, job_ids: list[str]) -> set[str]:
        kept = self.store.renew(job_ids, self.owner, self.seconds)
        now = time.monotonic()
        for job_id in job_ids:
            if job_id in kept:
                with self._lock:
                    if job_id in self._renewed:
                        self._renewed[job_id] = now
            else:
                self._mark_lost(job_id)
        return kept

    def _mark_lost(self, job_id: str) -> None:
        with self._lock:
            if self._renewed.pop(job_id, None) is None and job_id in self._lost:
                return
            self._lost.add(job_id)
        log.warning("job lease lost: another process may drive the job now", extra={"job_id": job_id})
