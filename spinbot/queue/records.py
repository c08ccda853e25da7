"""What travels through Redis besides the job itself: a node's final record and its progress events."""

from __future__ import annotations

import time
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from spinbot.errors import SpinBotError, first_line
from spinbot.tasks.base import NodeOutput

Status = Literal["succeeded", "failed", "cancelled"]
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

STARTED, PROGRESS, DONE = "started", "progress", "done"


class NodeResult(BaseModel):
    """The one record of a finished run of a node; its presence means 'finished, do not run again'."""

    status: Status
    output: NodeOutput | None = None
    error: str | None = None
    worker: str | None = None
    finished_at: float = Field(default_factory=time.time)


def event(kind: str, **fields: Any) -> dict[str, str]:
    """A stream entry: flat string fields, stamped with the wall clock (latency is measured across processes)."""
    entry = {"type": kind, "ts": repr(time.time())}
    entry.update({k: str(v) for k, v in fields.items() if v is not None})
    return entry


def one_line(err: BaseException) -> str:
    """The error as one line for the control plane; the worker's log keeps the traceback."""
    if not str(err).strip():
        return type(err).__name__
    if isinstance(err, SpinBotError):
        return first_line(err)  # already written for the user
    return f"{type(err).__name__}: {first_line(err)}"
