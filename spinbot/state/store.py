"""Job state: create jobs, move nodes through their states, record outputs and artifacts.

Past 400 lines: JobStore is the one writer of a job's and its nodes' states, each change one conditional UPDATE
whose condition names the states it may come from (retry, cancel, delete, attempts); kept in one class so those
transitions read side by side. Leases (lease.py), webhook state (callbacks.py) and progress (progress.py) live apart.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from spinbot.errors import JobNotFound, TooManyJobs
from spinbot.state.idempotency import KeyInUse, find_keyed_job
from spinbot.state.inputs_in_use import lock_owner
from spinbot.state.lease import database_now
from spinbot.state.models import Artifact, Job, NodeRun, as_utc, utcnow
from spinbot.state.progress import job_progress, node_part
from spinbot.state.time_left import job_seconds_left

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
INTERRUPTED = "interrupted"  # stopped by its user (Ctrl-C in `spinbot run`): resumed only when asked to
# Its files, then its rows, are being removed (control/lifecycle.delete_job): no retry can make it pending again
# meanwhile; a delete cut short (a storage error) is finished by the next one.
DELETING = "deleting"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
RETRYABLE_STATES = (FAILED, INTERRUPTED)  # a retry makes them pending again
# Jobs a control plane resumes on its own when nobody holds them (at start, and when their owner's lease expired).
ORPHAN_STATES = (PENDING, QUEUED, RUNNING)
IN_FLIGHT_STATES = (QUEUED, RUNNING)  # a node its job's driver has started and not finished


@dataclass(frozen=True)
class NodeView:
    node_id: str
    task: str
    plane: str
    status: str
    progress: float
    message: str | None
    attempts: int
    error: str | None
    output: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    estimated_end_at: datetime | None = None  # a running node's, from its measured rate (spinbot.state.time_left)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def seconds_left(self, now: datetime) -> float | None:
        """A running node's estimated time left at `now` (UTC), once its rate is measured."""
        if self.status != RUNNING or self.estimated_end_at is None:
            return None
        return round(max(0.0, (as_utc(self.estimated_end_at) - now).total_seconds()), 1)


@dataclass(frozen=True)
class JobView:
    id: str
    pipeline: str
    status: str
    owner: str | None
    priority: int | None
    inputs: dict[str, Any]
    params: dict[str, Any]
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    nodes: tuple[NodeView, ...]
    artifacts: tuple[dict[str, Any], ...]
    recorded_progress: float = 0.0  # the highest overall progress its driver recorded (jobs.progress)
    callback: dict[str, Any] | None = None  # its webhook and delivery state (spinbot.control.callbacks); holds a secret
    idempotency_key: str | None = None  # the client's Idempotency-Key of the request that created it
    # The database's time when this was read (spinbot.state.lease.database_now): the clock its times were written
    # by, so a node's time left is counted on that clock too, not on this process's.
    read_at: datetime | None = None

    @property
    def now(self) -> datetime:
        return self.read_at or utcnow()

    def node(self, node_id: str) -> NodeView:
        return next(n for n in self.nodes if n.node_id == node_id)

    def seconds_left(self, now: datetime) -> float | None:
        """The job's estimated time left at `now` (UTC): its unfinished nodes' together, once each has one."""
        if self.status in FINAL_STATES:
            return None
        return job_seconds_left((n.status, n.seconds_left(now)) for n in self.nodes)

    @property
    def progress(self) -> float:
        """The job's overall progress (spinbot.state.progress): its nodes' progress weighted by their tasks' share of
        the work, monotonic, 1.0 only once it succeeded."""
        parts = (node_part(n.task, n.status, n.progress) for n in self.nodes)
        return job_progress(self.status, parts, self.recorded_progress)


def _view(job: Job, read_at: datetime) -> JobView:
    nodes = tuple(
        NodeView(
            n.node_id,
            n.task,
            n.plane,
            n.status,
            n.progress,
            n.message,
            n.attempts,
            n.error,
            n.output,
            n.started_at,
            n.finished_at,
            n.estimated_end_at,
        )
        for n in job.nodes
    )
    arts = tuple(
        {"node_id": a.node_id, "name": a.name, "key": a.key, "size": a.size, "content_type": a.content_type}
        for a in job.artifacts
    )
    return JobView(
        job.id,
        job.pipeline,
        job.status,
        job.owner,
        job.priority,
        job.inputs,
        job.params,
        job.error,
        job.cancel_requested,
        job.created_at,
        job.started_at,
        job.finished_at,
        nodes,
        arts,
        job.progress or 0.0,
        job.callback,
        job.idempotency_key,
        read_at,
    )


class JobStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create_job(
        self,
        job_id: str,
        pipeline: str,
        nodes: Iterable[tuple[str, str, str]],
        inputs: dict[str, Any],
        params: dict[str, Any],
        owner: str | None = None,
        priority: int | None = None,
        lease: tuple[str, float] | None = None,
        callback: dict[str, Any] | None = None,
        idempotency: tuple[str, str] | None = None,
        max_active: int | None = None,
        check_inputs: Callable[[], None] | None = None,
    ) -> JobView:
        """A new pending job; with `lease` (owner, seconds) it is born leased to its creator, so no other process
        can take it between its creation and its start. With `idempotency` (the client's key, its request's digest):
        KeyInUse, and nothing written, where the owner's key already names a job (the unique index decides). With
        `max_active`: TooManyJobs, and nothing written, where the owner would have more jobs waiting or running.
        `check_inputs` runs under the owner's lock, which deleting an upload takes too (state/inputs_in_use.py):
        whatever it raises (its uploads gone) is raised, and nothing written."""
        guarded = max_active is not None or check_inputs is not None
        try:
            with self.session() as s, s.begin():
                if guarded:
                    lock_owner(s, owner)
                now = database_now(s)
                # one flat list of the row's columns: what, with the params, keeps this function long
                job = Job(
                    id=job_id,
                    pipeline=pipeline,
                    status=PENDING,
                    owner=owner,
                    priority=priority,
                    inputs=inputs,
                    params=params,
                    created_at=now,
                    callback=callback,
                    idempotency_key=idempotency[0] if idempotency else None,
                    idempotency_digest=idempotency[1] if idempotency else None,
                )
                if lease is not None:
                    _lease_to(job, lease, now)
                s.add(job)
                _admit(s, owner, max_active, check_inputs)
                s.add_all(_pending_nodes(job_id, nodes))
        except IntegrityError:
            keyed = find_keyed_job(self.engine, owner, idempotency[0]) if idempotency else None
            if keyed is None:
                raise
            raise KeyInUse(keyed) from None
        return self.get(job_id)

    def get(self, job_id: str, owner: str | None = None) -> JobView:
        with self.session() as s:
            job = s.scalars(
                select(Job).where(Job.id == job_id).options(selectinload(Job.nodes), selectinload(Job.artifacts))
            ).first()
            if job is None or (owner is not None and job.owner != owner):
                raise JobNotFound(f"job '{job_id}' not found")
            return _view(job, database_now(s))

    def finished_before(self, cutoff: datetime) -> list[str]:
        """Finished jobs (succeeded, failed, cancelled, or a delete of one cut short) that finished before `cutoff`,
        oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Job.id)
                    .where(Job.status.in_((*FINAL_STATES, DELETING)), Job.finished_at < cutoff)
                    .order_by(Job.finished_at)
                )
            )

    def nodes_of_jobs_in(self, statuses: tuple[str, ...]) -> list[tuple[str, str]]:
        """(job id, node id) of every node of the jobs in these states."""
        with self.session() as s:
            rows = s.execute(
                select(NodeRun.job_id, NodeRun.node_id)
                .join(Job, Job.id == NodeRun.job_id)
                .where(Job.status.in_(statuses))
            )
            return [(job_id, node_id) for job_id, node_id in rows]

    def list(
        self, owner: str | None = None, limit: int = 20, offset: int = 0, status: str | None = None
    ) -> tuple[list[JobView], int]:
        with self.session() as s:
            q = select(Job).options(selectinload(Job.nodes), selectinload(Job.artifacts))
            count_q = select(func.count()).select_from(Job)
            if owner is not None:
                q = q.where(Job.owner == owner)
                count_q = count_q.where(Job.owner == owner)
            if status is not None:
                q = q.where(Job.status == status)
                count_q = count_q.where(Job.status == status)
            jobs = s.scalars(q.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
            now = database_now(s)
            return [_view(j, now) for j in jobs], s.scalar(count_q) or 0

    def count_unfinished(self, owner: str | None) -> int:
        """The owner's jobs that are waiting or running (pending, queued, running)."""
        with self.session() as s:
            return s.scalar(_count_unfinished(owner)) or 0

    def delete_job(self, job_id: str) -> None:
        """The job's rows: its node runs, artifact records and the job itself."""
        with self.session() as s, s.begin():
            s.execute(delete(Artifact).where(Artifact.job_id == job_id))
            s.execute(delete(NodeRun).where(NodeRun.job_id == job_id))
            s.execute(delete(Job).where(Job.id == job_id))

    def set_job_status(self, job_id: str, status: str, error: str | None = None) -> None:
        with self.session() as s, s.begin():
            now = database_now(s)
            values: dict[str, Any] = {"status": status}
            if status == RUNNING:
                values["started_at"] = func.coalesce(Job.started_at, now)
                values["error"] = None
                values["finished_at"] = None
            if status in FINAL_STATES:
                values["finished_at"] = now
            if status == SUCCEEDED:
                values["progress"] = 1.0
            if error is not None:
                values["error"] = error
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def reopen_failed(self, job_id: str, max_active: int | None = None, keep_priority: bool = True) -> bool:
        """failed (or interrupted) -> pending in one conditional UPDATE; True only for the caller whose update
        changed the row. With `max_active`: TooManyJobs, and the job left as it was, where its owner would have
        more jobs waiting or running. Without `keep_priority` the job runs again at the tasks' default priority."""
        values: dict[str, Any] = {"status": PENDING} if keep_priority else {"status": PENDING, "priority": None}
        with self.session() as s, s.begin():
            result = cast(
                "CursorResult[Any]",
                s.execute(update(Job).where(Job.id == job_id, Job.status.in_(RETRYABLE_STATES)).values(**values)),
            )
            if result.rowcount == 1 and max_active is not None:  # written first, as in create_job
                owner = s.scalar(select(Job.owner).where(Job.id == job_id))
                lock_owner(s, owner)
                _refuse_past_limit(s, owner, max_active)
            return result.rowcount == 1

    def mark_deleting(self, job_id: str, from_states: tuple[str, ...]) -> bool:
        """-> deleting in one conditional UPDATE, only from these states; False when the job was in none of them
        (a retry made it pending since it was read)."""
        with self.session() as s, s.begin():
            result = cast(
                "CursorResult[Any]",
                s.execute(update(Job).where(Job.id == job_id, Job.status.in_(from_states)).values(status=DELETING)),
            )
            return result.rowcount == 1

    def request_cancel(self, job_id: str) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def node_started(self, job_id: str, node_id: str, status: str = RUNNING) -> int:
        """Count an attempt and mark the node queued or running; a retry clears the last error. Returns the
        attempt's number."""
        with self.session() as s, s.begin():
            s.execute(
                update(NodeRun)
                .where(NodeRun.job_id == job_id, NodeRun.node_id == node_id)
                .values(
                    status=status,
                    attempts=NodeRun.attempts + 1,
                    started_at=database_now(s),
                    finished_at=None,
                    error=None,
                    progress=0.0,
                    message=None,
                    estimated_end_at=None,
                )
            )
            return self._attempts(s, job_id, node_id)

    def node_restarted(self, job_id: str, node_id: str, attempt: int, message: str) -> int | None:
        """The node's work began again from nothing within attempt `attempt` (its worker died and another one took
        the task): counted as the next attempt, from 0. None if `attempt` is no longer the node's current one."""
        with self.session() as s, s.begin():
            changed = cast(
                "CursorResult[Any]",
                s.execute(
                    update(NodeRun)
                    .where(NodeRun.job_id == job_id, NodeRun.node_id == node_id, NodeRun.attempts == attempt)
                    .values(
                        attempts=attempt + 1,
                        started_at=database_now(s),
                        progress=0.0,
                        message=message,
                        estimated_end_at=None,
                    )
                ),
            )
            return attempt + 1 if changed.rowcount == 1 else None

    def reset_in_flight(self, job_id: str, message: str) -> builtins.list[tuple[str, int]]:
        """Nodes left queued or running by a driver that is gone (its lease expired, or it handed the job back):
        pending again at 0, so the job's record shows no progress that nobody is making. Returns (node, attempts) of
        each one reset; the next attempt counts from there."""
        with self.session() as s, s.begin():
            stale = s.execute(
                select(NodeRun.node_id, NodeRun.attempts).where(
                    NodeRun.job_id == job_id, NodeRun.status.in_(IN_FLIGHT_STATES)
                )
            ).all()
            if stale:
                s.execute(
                    update(NodeRun)
                    .where(NodeRun.job_id == job_id, NodeRun.node_id.in_([n for n, _ in stale]))
                    .values(status=PENDING, progress=0.0, message=message, estimated_end_at=None)
                )
            return [(node_id, attempts) for node_id, attempts in stale]

    @staticmethod
    def _attempts(s: Session, job_id: str, node_id: str) -> int:
        where = (NodeRun.job_id == job_id, NodeRun.node_id == node_id)
        return s.scalar(select(NodeRun.attempts).where(*where)) or 0

    def node_status(self, job_id: str, node_id: str, status: str, *, error: str | None = None) -> None:
        with self.session() as s, s.begin():
            values: dict[str, Any] = {"status": status}
            if status in FINAL_STATES:
                values["finished_at"] = database_now(s)
            if error is not None:
                values["error"] = error
            s.execute(update(NodeRun).where(NodeRun.job_id == job_id, NodeRun.node_id == node_id).values(**values))

    def node_waiting(self, job_id: str, node_id: str, message: str, *, attempt: int) -> bool:
        """Why a queued node still waits (no worker serves its queue), while `attempt` is queued; its state stays."""
        where = [
            NodeRun.job_id == job_id,
            NodeRun.node_id == node_id,
            NodeRun.attempts == attempt,
            NodeRun.status == QUEUED,
        ]
        with self.session() as s, s.begin():
            written = cast("CursorResult[Any]", s.execute(update(NodeRun).where(*where).values(message=message)))
            return written.rowcount == 1

    def node_progress(
        self,
        job_id: str,
        node_id: str,
        progress: float,
        message: str | None,
        *,
        attempt: int,
        job_progress: float | None = None,
        seconds_left: float | None = None,
    ) -> bool:
        """A running node's progress (its estimated end from `seconds_left`, None while unmeasured; the job's
        progress raised to `job_progress`), only while `attempt` is still the
        node's attempt and in flight: a late write of a driver that lost the job never overwrites the next attempt's.
        Returns whether the node's row was written."""
        where = [
            NodeRun.job_id == job_id,
            NodeRun.node_id == node_id,
            NodeRun.attempts == attempt,
            NodeRun.status.in_(IN_FLIGHT_STATES),
        ]
        with self.session() as s, s.begin():
            # on the database's clock, as every time it holds: a reader on another machine counts it down on that
            # clock too (JobView.read_at), so neither process's clock error reaches the time left it shows
            end = {
                "estimated_end_at": None if seconds_left is None else database_now(s) + timedelta(seconds=seconds_left)
            }
            written = cast(
                "CursorResult[Any]",
                s.execute(
                    update(NodeRun).where(*where).values(progress=progress, message=message, status=RUNNING, **end)
                ),
            )
            if written.rowcount == 1 and job_progress is not None:
                self._raise_job_progress(s, job_id, job_progress)
            return written.rowcount == 1

    def raise_job_progress(self, job_id: str, progress: float) -> None:
        with self.session() as s, s.begin():
            self._raise_job_progress(s, job_id, progress)

    @staticmethod
    def _raise_job_progress(s: Session, job_id: str, progress: float) -> None:
        s.execute(update(Job).where(Job.id == job_id, Job.progress < progress).values(progress=progress))

    def node_succeeded(
        self, job_id: str, node_id: str, output: dict[str, Any], artifacts: builtins.list[dict[str, Any]]
    ) -> None:
        """Record a node's output and its artifacts in one transaction (a replay replaces, never duplicates)."""
        with self.session() as s, s.begin():
            now = database_now(s)
            s.execute(
                update(NodeRun)
                .where(NodeRun.job_id == job_id, NodeRun.node_id == node_id)
                .values(status=SUCCEEDED, output=output, progress=1.0, finished_at=now, error=None)
            )
            existing = {
                a.key: a
                for a in s.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.node_id == node_id))
            }
            for art in artifacts:
                row = existing.pop(art["key"], None)
                if row is None:
                    s.add(Artifact(job_id=job_id, node_id=node_id, created_at=now, **art))
                else:
                    row.size, row.content_type, row.name = art["size"], art.get("content_type"), art["name"]
            for stale in existing.values():
                s.delete(stale)


def _lease_to(job: Job, lease: tuple[str, float], now: datetime) -> None:
    """A new job born leased: to `lease`'s owner for its seconds from `now`, its heartbeat now."""
    job.lease_owner, job.heartbeat_at = lease[0], now
    job.lease_expires_at = now + timedelta(seconds=lease[1])


def _admit(s: Session, owner: str | None, max_active: int | None, check_inputs: Callable[[], None] | None) -> None:
    """The checks a new job (added to `s`, not yet flushed) passes under its owner's lock: its owner's active jobs
    within `max_active`, then `check_inputs`; whatever they raise rolls the job back."""
    if max_active is not None:
        s.flush()  # written first, so it is counted
        _refuse_past_limit(s, owner, max_active)
    if check_inputs is not None:
        check_inputs()


def _pending_nodes(job_id: str, nodes: Iterable[tuple[str, str, str]]) -> list[NodeRun]:
    """A new job's node rows, (node id, task, plane) in the pipeline's order."""
    return [
        NodeRun(
            job_id=job_id,
            node_id=node_id,
            position=pos,
            task=task,
            plane=plane,
            status=PENDING,
            progress=0.0,
            attempts=0,
        )
        for pos, (node_id, task, plane) in enumerate(nodes)
    ]


def _count_unfinished(owner: str | None):
    same_owner = Job.owner.is_(None) if owner is None else Job.owner == owner
    return select(func.count()).select_from(Job).where(same_owner, Job.status.in_(ORPHAN_STATES))


def _refuse_past_limit(s: Session, owner: str | None, max_active: int) -> None:
    """TooManyJobs where the owner has more than `max_active` jobs waiting or running. The caller has written its
    job (pending) in this transaction, so it is counted, and holds the owner's lock (inputs_in_use.lock_owner)."""
    active = s.scalar(_count_unfinished(owner)) or 0
    if active > max_active:  # the caller's job included
        raise TooManyJobs.at_limit(active - 1, max_active)
