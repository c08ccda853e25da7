"""SQLAlchemy models: jobs, their per-node runs and their artifacts (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime: a naive one is taken as UTC (every time this code stores is), an aware one converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_utc(moment: datetime) -> str:
    """The one text form of a time that the API and the CLI write: ISO 8601 in UTC with a Z, as pydantic writes an
    aware UTC datetime (2026-12-05T17:31:37.123456Z; no fraction when it is 0)."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


class UtcDateTime(TypeDecorator[datetime]):
    """A time column read back aware and in UTC: SQLite keeps no zone (it hands back naive values), PostgreSQL's
    timestamptz comes back in the session's TimeZone, which need not be UTC. Written in UTC too, because SQLite
    would store an aware non-UTC time's wall clock without its offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UtcDateTime}  # noqa: RUF012 - SQLAlchemy's name


# The key whose job a request with an Idempotency-Key names, at most one per API key (spinbot.state.idempotency);
# jobs of the keyless API (owner NULL, loopback only) share one scope. Both column indexes, not one on an expression
# (coalesce(owner, '')): Alembic's batch mode on SQLite, which a later migration may use, keeps column indexes (a
# partial one too) but drops expression indexes.
OWNER_KEY_INDEX = "uq_jobs_owner_idempotency_key"
KEYLESS_KEY_INDEX = "uq_jobs_keyless_idempotency_key"
MAX_IDEMPOTENCY_KEY_CHARS = 255


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(OWNER_KEY_INDEX, "owner", "idempotency_key", unique=True),
        Index(
            KEYLESS_KEY_INDEX,
            "idempotency_key",
            unique=True,
            sqlite_where=text("owner IS NULL"),
            postgresql_where=text("owner IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    priority: Mapped[int | None] = mapped_column(Integer)  # queue priority, 1 runs first; None: the task's default
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The process driving the job (spinbot.state.lease): it renews lease_expires_at while it runs the job, and
    # another process may take the job over only once that time has passed.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # The highest overall progress recorded for the job (spinbot.state.progress): what it reports never goes back.
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # The job's webhook (spinbot.control.callbacks): URL, secret and delivery state; the event being delivered; when
    # its next attempt is due (None: nothing to deliver). A process delivering it holds it by moving the due time.
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    callback_event: Mapped[str | None] = mapped_column(String(40))
    callback_due_at: Mapped[datetime | None] = mapped_column(index=True)
    # The client's Idempotency-Key of the request that created the job, and the SHA-256 of that request (its JSON
    # body, canonical): a repeat with the same key answers this job, one with another body is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(MAX_IDEMPOTENCY_KEY_CHARS))
    idempotency_digest: Mapped[str | None] = mapped_column(String(64))

    nodes: Mapped[list[NodeRun]] = relationship(back_populates="job", order_by="NodeRun.position")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="job", order_by="Artifact.id")


class NodeRun(Base):
    __tablename__ = "node_runs"
    __table_args__ = (UniqueConstraint("job_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    task: Mapped[str] = mapped_column(String(200))
    plane: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # While it runs: when it should end, from its measured progress rate (spinbot.state.time_left); None before that.
    estimated_end_at: Mapped[datetime | None]

    job: Mapped[Job] = relationship(back_populates="nodes")


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    content_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts")
