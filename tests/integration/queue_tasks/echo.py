"""test.echo: returns its text and writes it as an artifact; can fail on request."""

from __future__ import annotations

import time

from pydantic import Field

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams
from tests.integration.queue_tasks import record_start


class EchoParams(TaskParams):
    text: str = Field(default="hello", description="What the task returns and writes.")
    seconds: float = Field(default=0.0, description="How long it waits first.")
    fail: bool = Field(default=False, description="Fail instead, with a one-line error.")


def run(ctx: TaskContext, params: EchoParams) -> NodeOutput:
    record_start(ctx.job_id, ctx.node_id)
    time.sleep(params.seconds)
    ctx.progress(0.5, "echoing")
    if params.fail:
        raise ValueError("asked to fail\nsecond line that must not reach the control plane")
    path = ctx.output_path("echo.txt")
    path.write_text(params.text)
    return NodeOutput(values={"echo": params.text}, artifacts={"echo": ctx.save("echo.txt", path)})


TASK = TaskDef(name="test.echo", params_model=EchoParams, run=run)
