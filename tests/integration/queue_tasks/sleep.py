"""test.sleep: runs for a while with progress every step; writes an artifact at the start and one at the end."""

from __future__ import annotations

import os
import time

from pydantic import Field

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams
from tests.integration.queue_tasks import record_start


class SleepParams(TaskParams):
    seconds: float = Field(default=1.0, description="How long it sleeps.")
    step: float = Field(default=0.1, description="Seconds between progress reports.")


def run(ctx: TaskContext, params: SleepParams) -> NodeOutput:
    record_start(ctx.job_id, ctx.node_id)
    artifacts = {"partial": _save(ctx, "partial.txt")}
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < params.seconds:
        ctx.progress(elapsed / params.seconds, f"slept {elapsed:.1f} s")
        time.sleep(params.step)
    artifacts["final"] = _save(ctx, "final.txt")
    return NodeOutput(values={"pid": os.getpid()}, artifacts=artifacts)


def _save(ctx: TaskContext, name: str) -> str:
    path = ctx.output_path(name)
    path.write_text(str(os.getpid()))
    return ctx.save(name, path)


TASK = TaskDef(name="test.sleep", params_model=SleepParams, run=run)
