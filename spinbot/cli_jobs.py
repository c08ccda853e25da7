"""`spinbot jobs list | show | watch`: the jobs in this install's database, for a user who closed the terminal or lost
the `--resume` id (the HTTP API's GET /v1/jobs without a server); `watch` follows a job that another process runs
with `spinbot run`'s bars (spinbot.cli_progress)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

from spinbot.cli_checks import open_runner
from spinbot.cli_progress import ENDED_STATES, clock, invoked_as, node_line, resume_command, watch_with_progress
from spinbot.cli_style import Command, OneErrorStyle, err_console, fail, inert
from spinbot.errors import InputError, JobNotFound, NoData, SpinBotError
from spinbot.state.models import as_utc, iso_utc
from spinbot.state.store import (
    CANCELLED,
    DELETING,
    FAILED,
    INTERRUPTED,
    PENDING,
    RETRYABLE_STATES,
    RUNNING,
    SUCCEEDED,
)
from spinbot.tasks.user_files import INPUTS_NODE

app = typer.Typer(cls=OneErrorStyle, no_args_is_help=True, help="List, show and watch jobs.")

LIST_DEFAULT = 20
LIST_MAX = 500
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED, DELETING)  # a job's (the API's JobStatus)
JSON_HELP = "Print JSON (for scripts) instead of plain text."
DATA_DIR_NOTE = "(SPINBOT_DATA_DIR; by default ./spinbot-data in the folder spinbot runs in)"


def jobs_place(settings=None) -> str:
    """Where this install's jobs are, so a user who looks from another folder sees why theirs are not there: the
    embedded database's file, or the setting that names another (never its URL: it may hold a password)."""
    from spinbot.settings import get_settings

    settings = settings or get_settings()
    if settings.database_url:
        return "the database SPINBOT_DATABASE_URL names"
    return f"{(settings.data_dir / 'spinbot.db').resolve()} {DATA_DIR_NOTE}"


def explain(err: SpinBotError) -> str:
    """An error's line; an unknown job's says where it was looked for and how to list the jobs there."""
    if not isinstance(err, JobNotFound):
        return str(err)
    from spinbot.settings import get_settings

    there = "its jobs" if get_settings().database_url else "the jobs there"
    return f"{err} in {jobs_place()}: `{invoked_as()} jobs list` lists {there}"


@app.command("list", cls=Command)
def jobs_list(
    status: str | None = typer.Option(None, metavar="STATUS", help=f"Only jobs in this state ({', '.join(STATUSES)})."),
    limit: int = typer.Option(
        LIST_DEFAULT, min=1, max=LIST_MAX, metavar="INTEGER", help=f"At most this many jobs (1 to {LIST_MAX})."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The jobs, newest first: id, pipeline, status, created (UTC), progress, output (the final video, once made).

    One job a line, in columns of one word each but the output, last: `awk` and `grep` work on it."""
    try:
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status '{status}' (statuses: {', '.join(STATUSES)})")
        runner = open_runner(reachable=False, existing=True)  # reading needs the database, not Redis
        jobs, total = runner.jobs.list(limit=limit, status=status)
    except NoData as err:  # no jobs here: a true answer (exit 0), that says where it looked
        _say_no_data(err, as_json)
        return
    except SpinBotError as err:
        fail(explain(err))
    if as_json:
        typer.echo(json.dumps([job_record(runner, job) for job in jobs], indent=2))
        return
    _print_table(runner, jobs)
    if total > len(jobs):
        err_console.print(f"{len(jobs)} of {total} jobs shown (--limit N for more)", highlight=False)


def _say_no_data(err: NoData, as_json: bool) -> None:
    if as_json:
        typer.echo("[]")
    err_console.print(str(err), highlight=False, markup=False, soft_wrap=True)


def _print_table(runner, jobs: list) -> None:
    if not jobs:
        err_console.print(f"no jobs in {jobs_place()}", highlight=False, markup=False, soft_wrap=True)
        return
    width = max(8, *(len(inert(job.pipeline)) for job in jobs))
    typer.echo(f"{'ID':<32}  {'PIPELINE':<{width}}  {'STATUS':<11}  {'CREATED':<20}  {'PROGRESS':>8}  OUTPUT")
    for job in jobs:
        output = output_place(runner, job) if job.status == "succeeded" else None
        typer.echo(
            f"{job.id:<32}  {inert(job.pipeline):<{width}}  {job.status:<11}  {utc(job.created_at):<20}  "
            f"{job.progress:>8.0%}  {inert(output or '-')}"
        )


@app.command("show", cls=Command)
def jobs_show(
    job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job to show."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A job's status, each node's state, progress and error, its files, and the command to resume or cancel it."""
    try:
        runner = open_runner(reachable=False, existing=True)
        job = runner.jobs.get(job_id)
    except SpinBotError as err:
        fail(explain(err))
    if as_json:
        typer.echo(json.dumps(job_record(runner, job), indent=2))
        return
    for line in describe_job(runner, job):
        typer.echo(line)


@app.command("watch", cls=Command)
def jobs_watch(job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job to follow.")) -> None:
    """Follow a job another process runs (serve, another run) with a bar per node until it ends.

    Then its output is printed (the video's path). Ctrl-C stops the watching only, never the job.

    Exit status: 0 once the job succeeded, 1 if it failed, was cancelled or interrupted, 130 on Ctrl-C."""
    try:
        runner = open_runner(reachable=False, existing=True)
        job = runner.jobs.get(job_id)
        if job.status not in ENDED_STATES:
            _say_if_nobody_runs(runner, job)
            job = watch_with_progress(runner, job.id)
    except SpinBotError as err:
        fail(explain(err))
    except KeyboardInterrupt:
        err_console.print(
            f"stopped watching; job {job_id} goes on ({invoked_as()} jobs show {job_id})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    _say_end(runner, job)


def _say_if_nobody_runs(runner, job) -> None:
    """A job no live process holds waits for one (`spinbot serve` takes such jobs over): say how to run it."""
    lease = runner.leases.store.view(job.id)
    if lease is None or not lease.live:
        err_console.print(
            f"no process runs job {job.id} now; waiting for one (`{invoked_as()} serve` takes it over, "
            f"`{resume_command(job.id, None)}` runs it here)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _say_end(runner, job) -> None:
    """The output of a job that succeeded on stdout; any other end one error line (exit 1)."""
    if job.status != "succeeded":
        fail(f"job {job.id} {job.status}: {job.error}" + _resume_hint(job), code=1)
    typer.echo(output_place(runner, job) or f"job {job.id} succeeded without a video")


def _resume_hint(job) -> str:
    """How to resume a failed or interrupted job, unless its error says it already (an interrupted one's does)."""
    if job.status not in RETRYABLE_STATES or "--resume" in (job.error or ""):
        return ""
    return f"; resume it with: {resume_command(job.id, None)}"


# ---- what a job is, in words and as JSON ----------------------------------------------------------------------
def describe_job(runner, job) -> list[str]:
    """`spinbot jobs show`'s lines: the job, its nodes, its files, what to do next."""
    lines = [
        f"job       {job.id}",
        f"pipeline  {inert(job.pipeline)}",
        f"status    {job.status} {job.progress:.0%}",
        f"created   {utc(job.created_at)}" + (f"  finished {utc(job.finished_at)}" if job.finished_at else ""),
    ]
    lines += [f"error     {inert(job.error)}"] if job.error else []  # an error may quote an API client's input
    lines += ["nodes"] + [f"  {_node_line(node)}" for node in job.nodes]
    made = [a for a in job.artifacts if a["node_id"] != INPUTS_NODE]  # not the uploaded portrait and voice
    if made:
        lines += ["files"] + [f"  {inert(a['node_id']):<14} {inert(place(runner, a['key']))}" for a in made]
    output = output_place(runner, job) if job.status == "succeeded" else None
    lines += [f"output    {inert(output)}"] if output else []
    return lines + [f"next      {hint}" for hint in next_steps(runner, job)]


def _node_line(node) -> str:
    if node.status == "succeeded":
        detail = f"took {clock(node.seconds)}" if node.seconds is not None else ""
    elif node.status == "failed":
        detail = node.error or ""
    else:
        detail = node.message or ""
    attempt = f"attempt {node.attempts}: " if node.attempts > 1 and node.status != "succeeded" else ""
    return node_line(node.node_id, node.status, 1.0 if node.status == "succeeded" else node.progress, attempt + detail)


def next_steps(runner, job) -> list[str]:
    """The commands that apply to the job as it is."""
    me = invoked_as()
    if job.status == "succeeded":
        return [f"copy the video: {resume_command(job.id, None)} --out FILE"]
    if job.status == "cancelled":
        return []
    if job.status in RETRYABLE_STATES:
        return [f"resume it: {resume_command(job.id, None)}", f"cancel it: {me} cancel {job.id}"]
    lease = runner.leases.store.view(job.id)
    if lease is not None and lease.live:
        return [f"follow it: {me} jobs watch {job.id}", f"cancel it: {me} cancel {job.id}"]
    return [
        f"no process runs it: {resume_command(job.id, None)} (or `{me} serve`, which takes it over)",
        f"cancel it: {me} cancel {job.id}",
    ]


def job_record(runner, job) -> dict[str, Any]:
    """`--json`: the job as plain values, each node's state and its files' places."""
    return {
        "id": job.id,
        "pipeline": job.pipeline,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        "created_at": iso_utc(job.created_at),  # as the API writes them
        "started_at": iso_utc(job.started_at) if job.started_at else None,
        "finished_at": iso_utc(job.finished_at) if job.finished_at else None,
        "output": output_place(runner, job) if job.status == "succeeded" else None,
        "nodes": [
            {
                "id": n.node_id,
                "task": n.task,
                "status": n.status,
                "progress": n.progress,
                "message": n.message,
                "attempts": n.attempts,
                "error": n.error,
                "seconds": n.seconds,
            }
            for n in job.nodes
        ],
        "files": {f"{a['node_id']}/{a['name']}": place(runner, a["key"]) for a in job.artifacts},
    }


def output_place(runner, job) -> str | None:
    """Where the job's final video is: a path on local storage, a URL on S3 (none where its pipeline is gone)."""
    try:
        key = runner.final_artifact(job)
    except SpinBotError:
        return None
    return place(runner, key) if key else None


def place(runner, key: str) -> str:
    store = runner.artifacts
    return str(store.path(key)) if hasattr(store, "path") else f"{store.url}/{key}"


def utc(moment: datetime) -> str:
    """A stored time as 2025-01-31T12:00:00Z: one word, to the second, for columns (`--json` has iso_utc's)."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
