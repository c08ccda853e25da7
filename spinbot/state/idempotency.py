"""A job's Idempotency-Key (POST /v1/jobs): the job an API key's key names, and the error a create meets when
another request stored that key first. The unique indexes on jobs (models.OWNER_KEY_INDEX, KEYLESS_KEY_INDEX)
decide between concurrent requests: one insert wins, the others find its job here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from spinbot.errors import SpinBotError
from spinbot.state.models import Job


@dataclass(frozen=True)
class KeyedJob:
    """The job stored under an owner's Idempotency-Key, and the digest of the request that created it."""

    job_id: str
    digest: str | None


class KeyInUse(SpinBotError):
    """A job could not be created: the owner's Idempotency-Key already names one (another request stored it first);
    the caller answers that job (same request) or refuses (another one)."""

    def __init__(self, job: KeyedJob):
        super().__init__(f"the Idempotency-Key already names job '{job.job_id}'")
        self.job = job


def find_keyed_job(engine: Engine, owner: str | None, key: str) -> KeyedJob | None:
    """The owner's job created with `key`, if one exists (a deleted job's key names nothing: it may be used again)."""
    same_owner = Job.owner.is_(None) if owner is None else Job.owner == owner
    with Session(engine) as s:
        row = s.execute(
            select(Job.id, Job.idempotency_digest).where(same_owner, Job.idempotency_key == key).limit(1)
        ).first()
    return None if row is None else KeyedJob(row[0], row[1])
