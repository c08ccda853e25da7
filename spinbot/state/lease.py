"""Job leases in the database: at most one process drives a job at a time.

A lease is three columns of the job's row: the owner (a process id string), when the lease expires, and the last
heartbeat. Taking a lease is one conditional UPDATE (free, already ours, or expired), so two processes that try at
once cannot both win: SQLite serialises writers, and PostgreSQL re-checks the condition on the row it locked.
Times come from the database's clock where there is one to share (PostgreSQL), so processes on machines whose
clocks disagree still agree on when a lease expires; SQLite is one file on one machine, whose clock is used. The
job store (spinbot.state.store) writes every time of a job and its nodes on that clock too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CursorResult, Engine, func, or_, select, update
from sqlalchemy.orm import Session

from spinbot.state.models import Job, as_utc, utcnow


@dataclass(frozen=True)
class LeaseView:
    owner: str | None
    expires_at: datetime | None
    heartbeat_at: datetime | None
    now: datetime  # the database's time when this was read

    @property
    def live(self) -> bool:
        return self.owner is not None and self.seconds_left > 0

    @property
    def seconds_left(self) -> float:
        return (as_utc(self.expires_at) - as_utc(self.now)).total_seconds() if self.expires_at else 0.0


def database_now(session: Session) -> datetime:
    """The time every process sharing this database agrees on."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(select(func.statement_timestamp())).scalar_one()
    return utcnow()


class LeaseStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def acquire(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's lease if it is free, expired or already ours; False if another owner holds it."""
        with self.session() as s, s.begin():
            now = database_now(s)
            taken: CursorResult = s.execute(  # type: ignore[assignment]  # an UPDATE's result is a cursor's
                update(Job)
                .where(
                    Job.id == job_id,
                    or_(Job.lease_owner.is_(None), Job.lease_owner == owner, Job.lease_expires_at < now),
                )
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds), heartbeat_at=now)
            )
            return taken.rowcount == 1

    def renew(self, job_ids: Iterable[str], owner: str, seconds: float) -> set[str]:
        """Extend the leases still ours (a lease that expired but that nobody took is still ours); returns them."""
        ids = list(job_ids)
        if not ids:
            return set()
        with self.session() as s, s.begin():
            now = database_now(s)
            mine = (Job.id.in_(ids), Job.lease_owner == owner)
            s.execute(
                update(Job).where(*mine).values(lease_expires_at=now + timedelta(seconds=seconds), heartbeat_at=now)
            )
            return set(s.scalars(select(Job.id).where(*mine)))

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up (only if it is still ours); the last heartbeat stays for the record."""
        with self.session() as s, s.begin():
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def view(self, job_id: str) -> LeaseView | None:
        with self.session() as s:
            row = s.execute(
                select(Job.lease_owner, Job.lease_expires_at, Job.heartbeat_at).where(Job.id == job_id)
            ).first()
            return LeaseView(*row, now=database_now(s)) if row else None

    def claimable(self, statuses: Iterable[str]) -> list[str]:
        """Jobs in these states that nobody holds (never leased, released, or expired), oldest first."""
        with self.session() as s:
            now = database_now(s)
            free = or_(Job.lease_owner.is_(None), Job.lease_expires_at < now)
            return list(s.scalars(select(Job.id).where(Job.status.in_(list(statuses)), free).order_by(Job.created_at)))
