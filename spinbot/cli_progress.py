"""The CLI's progress display: one bar per node with the node's own time, and Ctrl-C's resume hint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn
from rich.text import Text

from spinbot.cli_style import err_console


class NodeTimeColumn(ProgressColumn):
    """A node's own time: the recorded seconds of a finished node (also one that finished before --resume), the
    time since it started while it runs, nothing before it starts."""

    def render(self, task: Task) -> Text:
        seconds = task.fields.get("seconds")
        if seconds is None:
            if not task.started:
                return Text("-:--:--", style="progress.elapsed")
            seconds = task.elapsed or 0
        return Text(str(timedelta(seconds=int(seconds))), style="progress.elapsed")


def run_with_progress(runner, job_id: str) -> Any:
    job, interrupted = runner.jobs.get(job_id), False
    with Progress(
        TextColumn("{task.fields[node]:<14}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]:<10}"),
        NodeTimeColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=False,
    ) as progress:
        bars = {
            n.node_id: progress.add_task(
                n.message or "",
                total=1.0,
                node=n.node_id,
                status=n.status,
                start=False,
                completed=1 if n.status == "succeeded" else 0,
                seconds=n.seconds if n.status == "succeeded" else None,
            )
            for n in job.nodes
        }

        def on_event(event) -> None:
            if event.kind != "node" or event.node_id not in bars:
                return
            bar = bars[event.node_id]
            progress.start_task(bar)  # the node's clock starts at its first event (no-op once started)
            done = 1.0 if event.status == "succeeded" else event.progress
            seconds = runner.jobs.get(job_id).node(event.node_id).seconds if event.status == "succeeded" else None
            progress.update(
                bar, completed=done, status=event.status, description=(event.message or "")[:60], seconds=seconds
            )

        unsubscribe = runner.events.subscribe(on_event)
        try:
            return runner.run(job_id)
        except KeyboardInterrupt:  # the runner marked the job interrupted
            interrupted = True
        finally:
            unsubscribe()
    if interrupted:
        err_console.print(
            f"job {job_id} interrupted; resume it with: spinbot run --resume {job_id}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(130)
