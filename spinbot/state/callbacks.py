"""A job's webhook delivery state on its row (spinbot.control.callbacks sends it).

`jobs.callback` holds the URL, the secret and the delivery state (JSON), `jobs.callback_event` the id of the event
being delivered, `jobs.callback_due_at` when its next attempt is due (NULL: nothing to deliver). A process that
delivers an attempt first claims it in one conditional UPDATE that moves the due time past the attempt's longest
run, so of the processes sharing the database one sends it, and if that one dies the claim runs out and another
sends it again (at least once). Times come from the database's clock (spinbot.state.lease.database_now).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, select, update
from sqlalchemy.orm import Session

from spinbot.state.lease import database_now
from spinbot.state.models import Job

WAITING, PENDING, DELIVERED, FAILED, SUPERSEDED = "waiting", "pending", "delivered", "failed", "superseded"


@dataclass(frozen=True)
class Claim:
    """One attempt this process holds: the job's callback as stored and when the attempt was claimed."""

    job_id: str
    event_id: str
    callback: dict[str, Any]
    now: datetime


def new_callback(url: str, secret: str) -> dict[str, Any]:
    """The state of a job's webhook as the job is created: waiting for the job to end."""
    return {"url": url, "secret": secret, "state": WAITING, "event_id": None, "event": None, "attempts": 0}


class CallbackStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def job_ended(self, job_id: str, status: str) -> bool:
        """A new event for a job that reached a final state, due now; False for a job without a webhook. An earlier
        event still being delivered (a failure, then a retry that succeeded) is replaced."""
        with self.session() as s, s.begin():
            callback = s.scalar(select(Job.callback).where(Job.id == job_id))
            if not callback:
                return False
            event = f"evt_{uuid.uuid4().hex}"
            fresh = {**callback, "state": PENDING, "event_id": event, "event": status, "attempts": 0}
            for name in ("last_attempt_at", "last_status", "last_error", "delivered_at"):
                fresh[name] = None
            values = {"callback": fresh, "callback_event": event, "callback_due_at": database_now(s)}
            s.execute(update(Job).where(Job.id == job_id).values(**values))
            return True

    def due(self, limit: int = 100) -> list[str]:
        """Jobs with an attempt due now (new, to retry, or claimed by a process that did not finish it)."""
        with self.session() as s:
            now = database_now(s)
            query = select(Job.id).where(Job.callback_due_at <= now).order_by(Job.callback_due_at).limit(limit)
            return list(s.scalars(query))

    def claim(self, job_id: str, hold_seconds: float) -> Claim | None:
        """Take the job's due attempt for `hold_seconds`; None where none is due or another process took it."""
        with self.session() as s, s.begin():
            now = database_now(s)
            taken = cast(
                "CursorResult[Any]",
                s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.callback_due_at <= now)
                    .values(callback_due_at=now + timedelta(seconds=hold_seconds))
                ),
            )
            if taken.rowcount != 1:
                return None
            callback, event = s.execute(select(Job.callback, Job.callback_event).where(Job.id == job_id)).one()
            return Claim(job_id, event, dict(callback), now) if callback and event else None

    def record(self, claim: Claim, changes: dict[str, Any], retry_in: float | None) -> bool:
        """An attempt's outcome, and the next attempt due in `retry_in` seconds (None: no more); only while the
        event is still the job's (a job retried and ended again has a new one). Returns whether it was written."""
        with self.session() as s, s.begin():
            due = None if retry_in is None else database_now(s) + timedelta(seconds=retry_in)
            written = cast(
                "CursorResult[Any]",
                s.execute(
                    update(Job)
                    .where(Job.id == claim.job_id, Job.callback_event == claim.event_id)
                    .values(callback={**claim.callback, **changes}, callback_due_at=due)
                ),
            )
            return written.rowcount == 1
