"""spinbot run | demo | gc | params | pipelines (list, show, validate) | serve | worker."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from spinbot import __version__
from spinbot.cli_progress import run_with_progress
from spinbot.cli_style import HELP, Command, OneErrorStyle, err_console, fail
from spinbot.control.requests import DEFAULT_PIPELINE, JobRequest
from spinbot.errors import InputError, SpinBotError
from spinbot.models.cli import app as models_app

app = typer.Typer(
    cls=OneErrorStyle,
    add_completion=False,
    no_args_is_help=True,
    context_settings=HELP,
    help="SpinBot: prompt + portrait + voice -> video.",
)
pipelines_app = typer.Typer(cls=OneErrorStyle, no_args_is_help=True, help="List, show and validate pipelines.")
app.add_typer(pipelines_app, name="pipelines")
for _command in models_app.registered_commands:  # the same help and errors under `spinbot models`
    if _command.cls in (None, TyperCommand):
        _command.cls = Command
app.add_typer(models_app, name="models", cls=OneErrorStyle)


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


def parse_sets(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """NODE.PARAM=VALUE pairs -> {node: {param: value}}; values stay strings and the params models convert them."""
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        node, dot, name = target.partition(".")
        if not sep or not dot or not node or not name:
            raise InputError(f"--set expects NODE.PARAM=VALUE, got '{pair}'")
        params.setdefault(node, {})[name] = value
    return params


def _run_watched(runner, job_id: str, watch: bool, port: int) -> Any:
    """With --watch: say where the live playlists are (and serve them from S3) while the job runs."""
    if not watch:
        return run_with_progress(runner, job_id)
    from spinbot.watch import watch as live_places

    with live_places(runner, job_id, lambda line: err_console.print(line, highlight=False, soft_wrap=True), port):
        return run_with_progress(runner, job_id)


def _check_out(out: Path | None) -> None:
    """--out before any work: an existing folder (the video goes in it), or a file whose folder exists or can be
    made and is writable; otherwise one line now rather than a failed copy after a long render."""
    if out is None or out.is_dir():
        target = out
    else:
        target = out.parent
        if out.exists() and not out.is_file():
            raise InputError(f"--out {out}: exists and is not a regular file")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"--out {out}: cannot create its folder ({err.strerror or err})") from None
    if target is not None:
        try:  # a file made and removed: permission bits do not say it for root, nor for /proc-like folders
            with tempfile.NamedTemporaryFile(dir=target, prefix=".spinbot-out-"):
                pass
        except OSError as err:
            raise InputError(f"--out {out}: cannot write in {target} ({err.strerror or err})") from None


def _finish(runner, job, out: Path | None) -> None:
    if job.status != "succeeded":
        fail(f"job {job.id} {job.status}: {job.error}", code=1)
    key = runner.final_artifact(job)
    if key is None:
        fail(f"job {job.id} succeeded but produced no artifact", code=1)
    name = f"{job.id}{Path(key).suffix}"
    out = out / name if out is not None and out.is_dir() else out or Path("spinbot-out") / name
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        runner.artifacts.download(key, out)
    except OSError as err:  # the video stays in the job's artifacts: say how to get it
        fail(
            f"could not write {out} ({err.strerror or err}); the video is kept: "
            f"spinbot run --resume {job.id} --out ANOTHER_FILE copies it",
            code=1,
        )
    typer.echo(str(out))


def _runner(watch: bool = False):
    """The control plane in this process; jobs it runs write their live output only when watched (--watch)."""
    from spinbot.control.runner import Runner
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings

    setup_logging("WARNING")
    settings = get_settings()
    return Runner(settings.model_copy(update={"live_output": settings.live_output and watch}))


SET_HELP = "NODE.PARAM=VALUE, repeatable (`spinbot params` lists them)."


@app.command(cls=Command)
def run(
    prompt: str | None = typer.Option(
        None,
        metavar="TEXT",
        help="What the video is about (the LLM writes the "
        "script from it). (required unless --resume or --set script.text=...)",
    ),
    image: Path | None = typer.Option(None, metavar="FILE", help="Portrait image. (required unless --resume)"),
    voice: Path | None = typer.Option(
        None, metavar="FILE", help="Narrator voice sample to clone. (required unless --resume)"
    ),
    ref_text: str | None = typer.Option(None, "--ref-text", metavar="TEXT", help="Transcript of the voice sample."),
    pipeline: str = typer.Option(DEFAULT_PIPELINE, metavar="NAME", help="Pipeline name from pipelines.json."),
    set_: list[str] = typer.Option([], "--set", metavar="NODE.PARAM=VALUE", help=SET_HELP),
    out: Path | None = typer.Option(
        None, metavar="FILE", help="Where to copy the final video (a folder: it goes in as JOB_ID.mp4)."
    ),
    resume: str | None = typer.Option(None, metavar="JOB_ID", help="Continue job JOB_ID from its last finished node."),
    priority: int | None = typer.Option(
        None, min=1, metavar="INTEGER", help="Queue priority of the job's tasks (1 runs first)."
    ),
    watch: bool = typer.Option(
        False,
        "--watch",
        help="Watch the video while it renders: prints each live HLS "
        "playlist's path (local storage) or serves it on a loopback URL (S3).",
    ),
    watch_port: int = typer.Option(
        0, "--watch-port", min=0, max=65535, metavar="INTEGER", help="Port for --watch on S3 (0: any free port)."
    ),
) -> None:
    """Run a job to the end with a progress bar per node, then print the output path."""
    try:
        _check_out(out)
        runner = _runner(watch)
        if resume:
            job_id = runner.jobs.get(resume).id
            runner.leases.require(job_id, wait_if_silent=True)  # another process's job: one line, no progress
        else:
            params = parse_sets(set_)
            own_script = str(params.get("script", {}).get("text") or "").strip()
            given = (("--prompt", prompt or own_script), ("--image", image), ("--voice", voice))
            missing = [name for name, value in given if not value]
            if missing:
                raise InputError(f"missing {', '.join(missing)} (or use --resume JOB_ID)")
            job_id = runner.create_job(
                JobRequest(
                    pipeline=pipeline,
                    prompt=prompt or "",
                    image=image,
                    voice=voice,
                    ref_text=ref_text,
                    params=params,
                    priority=priority,
                )
            )
            err_console.print(f"job {job_id}", highlight=False)
        job = _run_watched(runner, job_id, watch, watch_port)
        _finish(runner, job, out)
    except SpinBotError as err:
        fail(str(err))


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
        _check_out(out)
        runner = _runner()
        image = samples.portrait_path(runner.settings.data_dir / "samples")
        job_id = runner.create_job(
            JobRequest(
                prompt=prompt or samples.DEMO_PROMPT,
                image=image,
                voice=samples.voice_path(),
                ref_text=samples.BECKETT_TRANSCRIPT,
                params=parse_sets(set_),
            )
        )
        err_console.print(f"job {job_id}", highlight=False)
        job = run_with_progress(runner, job_id)
        _finish(runner, job, out)
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
        tasks = _tasks_by_name()
        if task is not None and task not in tasks:
            raise InputError(f"unknown task '{task}'{did_you_mean(task, tasks)} (tasks: {', '.join(tasks)})")
        wanted = {tasks[task]} if task else dict.fromkeys(tasks.values())
        for node_id, task_name in wanted:
            _print_params(node_id, task_name, describe_params(load_task(task_name).params_model))
    except SpinBotError as err:
        fail(str(err))


def _tasks_by_name() -> dict[str, tuple[str, str]]:
    """What `spinbot params` accepts: node id (the --set prefix) -> (node id, task), task names too."""
    from spinbot.pipelines.spec import get_pipeline

    nodes = {n.id: (n.id, n.task) for n in get_pipeline(DEFAULT_PIPELINE).nodes}
    return nodes | {task: (node, task) for node, task in nodes.values()}


def _print_params(node_id: str, task: str, infos: list) -> None:
    from spinbot.tasks.describe import plain_value

    typer.echo(f"{node_id}" + (f" (task {task})" if task != node_id else "") + f": --set {node_id}.PARAM=VALUE")
    for info in infos:
        kind = " | ".join(map(str, info.choices)) if info.choices else info.type
        limits = f", {info.bounds}" if info.bounds else ""
        typer.echo(f"  {info.name:<22} {kind}{limits}; default {plain_value(info.default)}")
        typer.echo(f"  {'':<22} {info.description}")
    typer.echo("")


@pipelines_app.command("list", cls=Command)
def pipelines_list() -> None:
    """Every pipeline, with its nodes in order."""
    from spinbot.pipelines.spec import load_pipelines

    try:
        for name, spec in load_pipelines().items():
            typer.echo(f"{name}\t{' -> '.join(spec.topological_order())}")
    except SpinBotError as err:
        fail(str(err))


@pipelines_app.command("show", cls=Command)
def pipelines_show(name: str = typer.Argument(..., metavar="NAME", help="A pipeline name.")) -> None:
    """Print a pipeline as JSON."""
    from spinbot.pipelines.spec import get_pipeline

    try:
        spec = get_pipeline(name)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(json.dumps(spec.model_dump(by_alias=True, exclude={"name"}), indent=2))


@pipelines_app.command("validate", cls=Command)
def pipelines_validate(file: Path = typer.Argument(..., metavar="FILE", help="A pipelines.json to check.")) -> None:
    """Check a pipelines file: its format, its tasks and its graph."""
    from spinbot.pipelines.spec import load_pipelines_file

    try:
        pipelines = load_pipelines_file(file)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(f"ok: {len(pipelines)} pipeline(s): {', '.join(pipelines)}")


@app.command(cls=Command)
def gc(
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, help="Days since a job finished (default: SPINBOT_JOB_RETENTION_DAYS)."
    ),
    job: list[str] = typer.Option([], "--job", help="Delete this finished job whatever its age (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the jobs that would be deleted."),
) -> None:
    """Delete finished jobs: their artifacts, the uploads no other job uses, their records."""
    from spinbot.control.lifecycle import expire_jobs

    try:
        runner = _runner()
        days = older_than if older_than is not None else runner.settings.job_retention_days
        if days is None and not job:
            raise InputError("nothing to delete: pass --older-than DAYS or --job ID, or set SPINBOT_JOB_RETENTION_DAYS")
        ids = [runner.jobs.get(job_id).id for job_id in job]  # every named job exists, before deleting any
        if not dry_run:
            for job_id in ids:
                runner.delete_job(job_id)
        ids += expire_jobs(runner, days, dry_run) if days is not None else []
    except SpinBotError as err:
        fail(str(err))
    for job_id in ids:
        typer.echo(job_id)
    err_console.print(f"{'would delete' if dry_run else 'deleted'} {len(ids)} job(s)", highlight=False)


@app.command(cls=Command)
def serve(
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to bind."),
    port: int = typer.Option(8000, metavar="INTEGER", help="Port to bind."),
) -> None:
    """Start the HTTP API (and the web page) with uvicorn; jobs run in this process's control plane."""
    import ipaddress

    from spinbot.api.app import create_app
    from spinbot.api.limits import run_server
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings

    settings = get_settings()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.api_key_list:
        fail(f"refusing to serve on {host} without API keys: set SPINBOT_API_KEYS (comma-separated)")
    setup_logging(settings.log_level)
    run_server(create_app(settings), host, port, settings.api_request_timeout, settings.api_max_connections)


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
    setup_logging(settings.log_level)
    try:
        run_worker([q.strip() for q in queues.split(",") if q.strip()] if queues else None, settings)
    except SpinBotError as err:
        fail(str(err))


def main() -> None:  # python -m spinbot
    from spinbot.errors import SettingsError

    try:
        app()
    except SettingsError as err:  # raised wherever a command first reads the settings
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
