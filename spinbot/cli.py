"""spinbot run | demo | cancel | gc | params | jobs (list, show, watch) | pipelines (list, show, validate) | models
(list, check, pull) | serve | worker."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from spinbot import __version__
from spinbot.cli_checks import (
    check_out,
    check_pipelines,
    check_serve_address,
    check_services,
    open_runner,
    refuse_new_job_options,
    worker_queues,
)
from spinbot.cli_jobs import app as jobs_app
from spinbot.cli_jobs import explain
from spinbot.cli_progress import deliver, run_with_progress
from spinbot.cli_sets import parse_sets, tasks_by_name
from spinbot.cli_style import HELP, Command, OneErrorStyle, err_console, fail, print_error
from spinbot.control.requests import DEFAULT_PIPELINE, PRIORITY_MAX, PRIORITY_MIN, JobRequest
from spinbot.errors import Conflict, InputError, NoData, SpinBotError
from spinbot.models.cli import app as models_app
from spinbot.pipelines.cli import app as pipelines_app
from spinbot.settings import MAX_RETENTION_DAYS

app = typer.Typer(
    cls=OneErrorStyle,
    add_completion=False,
    no_args_is_help=True,
    context_settings=HELP,
    help="SpinBot: prompt + portrait + voice -> video.",
)
app.add_typer(pipelines_app, name="pipelines")
for _command in models_app.registered_commands:  # the same help and errors under `spinbot models`
    if _command.cls in (None, TyperCommand):
        _command.cls = Command
app.add_typer(models_app, name="models", cls=OneErrorStyle)
app.add_typer(jobs_app, name="jobs")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"spinbot {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_show_version, metavar="", help="Print the version and exit."
    ),
) -> None:
    """SpinBot: prompt + portrait + voice -> video."""


def _run_watched(runner, job_id: str, watch: bool, port: int, out: Path | None) -> Any:
    """With --watch: say where the live playlists are (and serve them from S3) while the job runs."""
    if not watch:
        return run_with_progress(runner, job_id, out)
    from spinbot.watch import watch as live_places

    def say(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)

    with live_places(runner, job_id, say, port):
        return run_with_progress(runner, job_id, out)


def _check_out(out: Path | None, **inputs: Path | None) -> None:
    """--out before any work (one line now rather than a failed copy after a long render, or an input overwritten);
    a file there already is replaced, and the user is told so."""
    if check_out(out, {f"--{option}": path for option, path in inputs.items()}):
        err_console.print(
            f"--out {out} exists: the video will replace it", highlight=False, soft_wrap=True, markup=False
        )


def _new_job_request(
    prompt: str | None,
    image: Path | None,
    voice: Path | None,
    ref_text: str | None,
    pipeline: str,
    params: dict[str, dict[str, Any]],
    priority: int | None,
) -> JobRequest:
    """`spinbot run`'s new job, once every input it needs is given (one line naming each missing one otherwise)."""
    own_script = str(params.get("script", {}).get("text") or "").strip()
    # the script is the prompt's alternative: a user who gives neither learns of both
    given = (
        ("--prompt or --set script.text=YOUR WORDS", prompt or own_script),
        ("--image", image),
        ("--voice", voice),
    )
    missing = [name for name, value in given if not value]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or use --resume JOB_ID)")
    return JobRequest(
        pipeline=pipeline,
        prompt=prompt or "",
        image=image,
        voice=voice,
        ref_text=ref_text,
        params=params,
        priority=priority,
        local_files=True,  # --set NODE.narrator_voice=FILE
    )


SET_HELP = "NODE.PARAM=VALUE, repeatable (`spinbot params` lists them)."

# `spinbot run`'s options, declared here so that the command below reads as its steps.
_PROMPT = typer.Option(
    None,
    metavar="TEXT",
    help="What the video is about (the LLM writes the "
    "script from it). (required unless --resume or --set script.text=...)",
)
_IMAGE = typer.Option(None, metavar="FILE", help="Portrait image. (required unless --resume)")
_VOICE = typer.Option(None, metavar="FILE", help="Narrator voice sample to clone. (required unless --resume)")
_REF_TEXT = typer.Option(None, "--ref-text", metavar="TEXT", help="Transcript of the voice sample.")
_PIPELINE = typer.Option(DEFAULT_PIPELINE, metavar="NAME", help="Pipeline name from pipelines.json.")
_SETS = typer.Option([], "--set", metavar="NODE.PARAM=VALUE", help=SET_HELP)
_OUT = typer.Option(
    None,
    metavar="FILE",
    help="Where to copy the final video: an .mp4 file (its missing folders made) or a folder (it goes in as "
    "JOB_ID.mp4); default: spinbot-out/JOB_ID.mp4.",
)
_RESUME = typer.Option(
    None, metavar="JOB_ID", help="Continue job JOB_ID from its last finished node, with its own inputs."
)
_PRIORITY = typer.Option(
    None,
    min=PRIORITY_MIN,
    max=PRIORITY_MAX,
    metavar="INTEGER",
    help="Queue priority of the job's tasks (1 runs first).",
)
_WATCH = typer.Option(
    False,
    "--watch",
    help="Watch the video while it renders: prints each live HLS "
    "playlist's path (local storage) or serves it on a loopback URL (S3).",
)
_WATCH_PORT = typer.Option(
    0, "--watch-port", min=0, max=65535, metavar="INTEGER", help="Port for --watch on S3 (0: any free port)."
)


@app.command(cls=Command)
def run(
    ctx: typer.Context,
    prompt: str | None = _PROMPT,
    image: Path | None = _IMAGE,
    voice: Path | None = _VOICE,
    ref_text: str | None = _REF_TEXT,
    pipeline: str = _PIPELINE,
    set_: list[str] = _SETS,
    out: Path | None = _OUT,
    resume: str | None = _RESUME,
    priority: int | None = _PRIORITY,
    watch: bool = _WATCH,
    watch_port: int = _WATCH_PORT,
) -> None:
    """Run a job to the end with a progress bar per node, then print the output path.

    Ctrl-C, SIGTERM or SIGHUP marks the job interrupted and prints the command that resumes it (exit status 128 + the
    signal: 130, 143, 129)."""
    try:
        if resume:
            refuse_new_job_options(ctx)
        runner = open_runner(watch, existing=bool(resume))
        _check_out(out, image=image, voice=voice)
        if resume:
            job_id = _resumed_job(runner, resume)
        else:
            request = _new_job_request(prompt, image, voice, ref_text, pipeline, parse_sets(set_), priority)
            job_id = _new_job(runner, request)
        job = _run_watched(runner, job_id, watch, watch_port, out)
        deliver(runner, job, out)
    except SpinBotError as err:
        fail(explain(err))


def _resumed_job(runner, job_id: str) -> str:
    """--resume's job, once this process holds its lease."""
    job_id = runner.jobs.get(job_id).id
    runner.leases.require(job_id, wait_if_silent=True)  # another process's job: one line, no progress
    return job_id


def _new_job(runner, request: JobRequest) -> str:
    """The new job, its id said on stderr before any progress."""
    job_id = runner.create_job(request)
    err_console.print(f"job {job_id}", highlight=False)
    return job_id


@app.command(cls=Command)
def demo(
    out: Path = typer.Option(Path("spinbot-out/demo.mp4"), metavar="FILE", help="Where to write the demo video."),
    prompt: str = typer.Option(
        None, metavar="TEXT", help="Prompt for the script (default: a short one about learning)."
    ),
    set_: list[str] = typer.Option([], "--set", metavar="NODE.PARAM=VALUE", help=SET_HELP),
) -> None:
    """Run the default pipeline on sample inputs (scikit-image's astronaut, the Beckett speech sample)."""
    from spinbot import samples

    try:
        runner = open_runner()
        _check_out(out)
        image = samples.portrait_path(runner.settings.data_dir / "samples")
        job_id = runner.create_job(
            JobRequest(
                prompt=prompt or samples.DEMO_PROMPT,
                image=image,
                voice=samples.voice_path(),
                ref_text=samples.BECKETT_TRANSCRIPT,
                params=parse_sets(set_),
                local_files=True,
            )
        )
        err_console.print(f"job {job_id}", highlight=False)
        job = run_with_progress(runner, job_id, out)
        deliver(runner, job, out)
    except SpinBotError as err:
        fail(str(err))


@app.command(cls=Command)
def params(
    task: str | None = typer.Argument(
        None,
        metavar="TASK",
        help="A task (infinite_talk) or a node of the default pipeline (script); all when left out.",
    ),
) -> None:
    """Every parameter that --set takes, with its type, default and description."""
    from spinbot.tasks.base import did_you_mean
    from spinbot.tasks.catalog import load_task
    from spinbot.tasks.describe import describe_params

    try:
        tasks = tasks_by_name()
        if task is not None and task not in tasks:
            raise InputError(f"unknown task '{task}'{did_you_mean(task, tasks)} (tasks: {', '.join(tasks)})")
        wanted = {tasks[task]} if task else dict.fromkeys(tasks.values())
        for node_id, task_name in wanted:
            _print_params(node_id, task_name, describe_params(load_task(task_name).params_model))
    except SpinBotError as err:
        fail(str(err))


def _print_params(node_id: str, task: str, infos: list) -> None:
    from spinbot.tasks.describe import plain_value

    typer.echo(f"{node_id}" + (f" (task {task})" if task != node_id else "") + f": --set {node_id}.PARAM=VALUE")
    for info in infos:
        kind = " | ".join(map(str, info.choices)) if info.choices else info.type
        limits = f", {info.bounds}" if info.bounds else ""
        typer.echo(f"  {info.name:<22} {kind}{limits}; default {plain_value(info.default)}")
        typer.echo(f"  {'':<22} {info.description}")
    typer.echo("")


@app.command(cls=Command)
def cancel(job_id: str = typer.Argument(..., metavar="JOB_ID", help="The job to cancel.")) -> None:
    """Cancel a pending, running or interrupted job, also one whose process died.

    A job that a live process runs stops at its next progress report; one whose process died (its lease ran out) is
    cancelled at once."""
    from spinbot.state.store import CANCELLED, FINAL_STATES

    try:
        runner = open_runner(existing=True)
        job = runner.jobs.get(job_id)
        if job.status in FINAL_STATES and job.status != CANCELLED:
            raise Conflict(f"job {job.id} already {job.status}: there is nothing to cancel")
        runner.cancel(job.id)  # what POST /v1/jobs/{id}/cancel does
        status = runner.jobs.get(job.id).status
    except SpinBotError as err:
        fail(explain(err))
    if status == CANCELLED:
        typer.echo(f"job {job.id} cancelled")
    else:
        typer.echo(f"job {job.id}: cancel requested; the process running it stops it at its next progress report")


@app.command(cls=Command)
def gc(
    older_than: float | None = typer.Option(
        None,
        "--older-than",
        min=0,
        max=MAX_RETENTION_DAYS,
        help="Days since a job finished (default: SPINBOT_JOB_RETENTION_DAYS).",
    ),
    job: list[str] = typer.Option([], "--job", help="Delete this finished job whatever its age (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the jobs that would be deleted."),
) -> None:
    """Delete finished jobs: their artifacts, the uploads no other job uses, their records.

    Also the window checkpoints left behind by jobs that succeeded or were cancelled."""
    from spinbot.control.lifecycle import expire_jobs, sweep_checkpoints

    try:
        days = _retention_days(older_than, job)
        runner = open_runner(reachable=False, existing=True)  # deleting needs the database and storage, not Redis
        ids = [runner.jobs.get(job_id).id for job_id in job]  # every named job exists, before deleting any
        if not dry_run:
            for job_id in ids:
                runner.delete_job(job_id)
        ids += expire_jobs(runner, days, dry_run) if days is not None else []
        swept = 0 if dry_run else sweep_checkpoints(runner)
    except NoData as err:
        if job:  # the jobs named are not there
            fail(str(err))
        err_console.print(f"{err}; nothing to delete", highlight=False, markup=False, soft_wrap=True)
        return
    except SpinBotError as err:
        fail(explain(err))
    for job_id in ids:
        typer.echo(job_id)
    err_console.print(f"{'would delete' if dry_run else 'deleted'} {len(ids)} job(s)", highlight=False)
    if swept:
        err_console.print(
            f"removed {swept} file(s) of window checkpoints left behind by finished jobs", highlight=False
        )


def _retention_days(older_than: float | None, jobs: list[str]) -> float | None:
    """The age `gc` deletes from; InputError where neither it nor --job is given, checked before the data is looked
    for, so the usage error is the same with or without data."""
    from spinbot.settings import get_settings

    days = older_than if older_than is not None else get_settings().job_retention_days
    if days is None and not jobs:
        raise InputError("nothing to delete: pass --older-than DAYS or --job ID, or set SPINBOT_JOB_RETENTION_DAYS")
    return days


@app.command(cls=Command)
def serve(
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to bind."),
    port: int = typer.Option(8000, min=1, max=65535, metavar="INTEGER", help="Port to bind."),
) -> None:
    """Start the HTTP API (and the web page) with uvicorn; jobs run in this process's control plane."""
    from spinbot.api.app import create_app
    from spinbot.api.limits import run_server
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings

    settings = get_settings()
    try:  # before the app starts (and takes over unfinished jobs); a Redis or S3 outage is /readyz's to report
        check_serve_address(host, port, settings)
        check_pipelines(settings)
        check_services(settings, reachable=False)
    except SpinBotError as err:
        fail(str(err))
    setup_logging(settings.log_level)
    limits = settings.api_request_timeout, settings.api_max_connections, settings.api_send_timeout
    run_server(create_app(settings), host, port, *limits)


@app.command(cls=Command)
def worker(
    queues: str | None = typer.Option(
        None, metavar="NAMES", help="Comma-separated queues to serve (default: SPINBOT_WORKER_QUEUES, gpu,cpu)."
    ),
    gpus: str | None = typer.Option(
        None,
        metavar="INDICES",
        help="Run the native InfiniteTalk transformer on these CUDA GPUs, one process each (e.g. 0,1,2,3; "
        "default: SPINBOT_WORKER_GPUS).",
    ),
) -> None:
    """Run python-plane tasks from the Redis queues (SPINBOT_REDIS_URL) until SIGTERM."""
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings
    from spinbot.worker.gpu_group import parse_gpus
    from spinbot.worker.main import run_worker

    settings = get_settings()
    if gpus is not None:
        try:
            parse_gpus(gpus)  # an empty value too: the option was given
        except SpinBotError as err:
            fail(str(err))
        settings = settings.model_copy(update={"worker_gpus": gpus})
    try:
        check_services(settings, database=False, reachable=False)  # a Redis outage it rides out
        setup_logging(settings.log_level)
        run_worker(worker_queues(queues, settings), settings)
    except SpinBotError as err:
        fail(str(err))


def main() -> None:  # python -m spinbot
    from spinbot.errors import SettingsError

    try:
        app()
    except SettingsError as err:  # raised wherever a command first reads the settings
        print_error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
