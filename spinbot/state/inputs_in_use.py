"""Which stored inputs (uploads) an owner's jobs name, and the lock that keeps a job and the deletion of its uploads
apart: a job is written (JobStore.create_job, which checks there that its uploads are still stored) and an upload is
deleted (DELETE /v1/uploads/{id}, the uploads a deleted job leaves) each in a transaction that holds the owner's lock,
so a delete either sees the job and keeps the upload, or deletes it before the job is written and the job is refused.
Without it, an upload deleted while a job's inputs were being checked left a job without its input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable

from sqlalchemy import ColumnElement, Engine, Text, cast, false, func, or_, select, true, update
from sqlalchemy.orm import Session

from spinbot.state.models import Job


def lock_owner(s: Session, owner: str | None) -> None:
    """One transaction at a time writes an owner's jobs or deletes its uploads, until it ends. PostgreSQL: a lock
    on the owner's name (its READ COMMITTED would let two transactions each read without the other's writes).
    SQLite: its one write lock, taken by a write that changes no row; what the transaction reads from then on is the
    latest (WAL)."""
    if s.get_bind().dialect.name == "postgresql":
        digest = hashlib.blake2b(f"spinbot.jobs.owner:{owner}".encode(), digest_size=8).digest()
        s.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True))))
    else:
        s.execute(update(Job).where(false()).values(status=Job.status))


def jobs_naming(s: Session, owner: str | None, keys: Iterable[str], except_job: str = "") -> dict[str, str]:
    """{key: the newest job of the owner, other than `except_job`, whose inputs name it} for each of `keys` named
    (uploads are per owner, so no other owner's job can name them). A job being deleted names none: it never reads
    its inputs again, and two jobs deleted at once each kept their shared uploads for the other, which left them
    named by no job."""
    from spinbot.state.store import DELETING  # store.py imports this module

    wanted, named = set(keys), {}
    same_owner = Job.owner.is_(None) if owner is None else Job.owner == owner
    rows = s.execute(
        select(Job.id, Job.inputs)
        .where(Job.id != except_job, same_owner, Job.status != DELETING, _may_name(wanted))
        .order_by(Job.created_at, Job.id)
    )
    for job_id, inputs in rows:  # oldest first: the newest job naming a key is the one kept
        named.update({key: job_id for key in (inputs or {}).get("artifacts", {}).values() if key in wanted})
    return named


def _may_name(keys: set[str]) -> ColumnElement[bool]:
    """The jobs whose inputs' JSON text holds one of `keys` as a JSON string: the database reads them, where decoding
    every job's inputs here took 0.5 s for an owner of 50,000 jobs (SQLite) on each upload or job deletion. A filter
    that may let more through (SQLite's LIKE ignores ASCII case; a key may be in `values`): jobs_naming checks each
    job it passes. No filter where a key is not its own JSON text (a quote, a backslash, a non-ASCII letter), which
    PostgreSQL and the JSON encoder may write differently."""
    if any(not key.isascii() or json.dumps(key) != f'"{key}"' for key in keys):
        return true()
    escaped = (json.dumps(key).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for key in keys)
    return or_(false(), *(cast(Job.inputs, Text).like(f"%{quoted}%", escape="\\") for quoted in escaped))


def delete_unused(
    engine: Engine,
    owner: str | None,
    keys: Iterable[str],
    delete: Callable[[list[str]], None],
    except_job: str = "",
) -> dict[str, str]:
    """Call `delete` with those of `keys` that no job of the owner (but `except_job`) names, under the owner's lock;
    returns {key: job} for each key kept because a job names it. No job naming one can be written meanwhile."""
    wanted = set(keys)  # read twice below: a generator would be empty the second time
    with Session(engine) as s, s.begin():
        lock_owner(s, owner)
        named = jobs_naming(s, owner, wanted, except_job)
        unused = sorted(wanted - named.keys())
        if unused:
            delete(unused)  # within the transaction: the lock is held until the files are gone
        return named
