"""Hand python-plane tasks to the data plane. Embedded: run in this process. Distributed: the Redis queue."""

from __future__ import annotations

import resource
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from spinbot.storage.base import ArtifactStore
from spinbot.tasks.base import NodeOutput, TaskContext, validate_params
from spinbot.tasks.catalog import load_task
from spinbot.tasks.video_budget import DerivedVideo


class TaskRequest(BaseModel):
    """Everything a worker needs to run one node; serializable, so it can travel through a queue."""

    job_id: str
    node_id: str
    task: str
    params: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=1)  # queue priority, 1 runs first; None: the task's default
    live_output: bool = True  # the video also as live HLS while it renders, from the tasks that can (tasks/live.py)
    # the videos later nodes make from this one's (the upscales after a talking head), which the task holds to the
    # size limits with its own before it renders (spinbot.control.budgets.derived_videos)
    derived_videos: list[DerivedVideo] = Field(default_factory=list)


def execute_task(
    request: TaskRequest,
    store: ArtifactStore,
    report: Callable[[float, str], None] = lambda f, m: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    workdir_root: Path | None = None,
) -> NodeOutput:
    """Run one task by name: validate its params, give it a work folder, return its output."""
    task = load_task(request.task)
    params = validate_params(request.node_id, task.params_model, request.params)
    workdir = Path(tempfile.mkdtemp(prefix=f"spinbot-{request.node_id}-", dir=workdir_root))
    ctx = TaskContext(
        job_id=request.job_id,
        node_id=request.node_id,
        store=store,
        workdir=workdir,
        values=dict(request.values),
        artifacts=dict(request.artifacts),
        report=report,
        is_cancelled=is_cancelled,
        live_output=request.live_output,
        derived_videos=list(request.derived_videos),
    )
    try:
        output = task.run(ctx, params)
    finally:
        ctx.cleanup()
    # Peak RSS of the process that ran the task, so far: in a fresh worker or CLI run, the task's own peak.
    output.meta.setdefault("peak_rss_mib", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return output


def report_restart(report: Callable[[float, str], None], message: str) -> None:
    """Tell a node's reporter that its task began again from nothing (another worker took it over after the first
    one died): the control plane's reporter counts a new attempt (spinbot.control.progress.NodeProgress.restart);
    a plain callable gets a report of 0."""
    restart = getattr(report, "restart", None)
    if callable(restart):
        restart(message)
    else:
        report(0.0, message)


class Dispatcher(ABC):
    @abstractmethod
    def run(
        self, request: TaskRequest, report: Callable[[float, str], None], is_cancelled: Callable[[], bool]
    ) -> NodeOutput:
        """Run the task to the end (wherever it runs) and return its output; raise on failure."""


class InProcessDispatcher(Dispatcher):
    def __init__(self, store: ArtifactStore):
        self.store = store

    def run(self, request, report, is_cancelled):
        return execute_task(request, self.store, report, is_cancelled)


def report_waiting(report: Callable[[float, str], None], message: str) -> None:
    """Tell a node's reporter why its task waits in the queue (no worker serves the queue): the control plane's
    reporter shows it with the node still queued (spinbot.control.progress.NodeProgress.waiting); a plain callable
    gets nothing, since any report would mean the task runs."""
    waiting = getattr(report, "waiting", None)
    if callable(waiting):
        waiting(message)
