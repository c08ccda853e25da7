"""spinbot run | demo | pipelines (list, show, validate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from spinbot.errors import InputError, SpinBotError
from spinbot.models.cli import app as models_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SpinBot: prompt + portrait + voice -> video.")
pipelines_app = typer.Typer(no_args_is_help=True, help="List, show and validate pipelines.")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(models_app, name="models")
err_console = Console(stderr=True)
DEFAULT_PIPELINE = "f5tts_infinitetalk"


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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


def _run_with_progress(runner, job_id: str) -> Any:
    job = runner.jobs.get(job_id)
    with Progress(TextColumn("{task.fields[node]:<14}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[status]:<10}"), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=err_console, transient=False) as progress:
        bars = {n.node_id: progress.add_task(n.message or "", total=1.0, node=n.node_id, status=n.status,
                                             completed=1.0 if n.status == "succeeded" else 0.0)
                for n in job.nodes}

        def on_event(event) -> None:
            if event.kind == "node" and event.node_id in bars:
                done = 1.0 if event.status == "succeeded" else event.progress
                progress.update(bars[event.node_id], completed=done, status=event.status,
                                description=(event.message or "")[:60])

        unsubscribe = runner.events.subscribe(on_event)
        try:
            return runner.run(job_id)
        finally:
            unsubscribe()


def _finish(runner, job, out: Optional[Path]) -> None:
    if job.status != "succeeded":
        fail(f"job {job.id} {job.status}: {job.error}", code=1)
    key = runner.final_artifact(job)
    if key is None:
        fail(f"job {job.id} succeeded but produced no artifact", code=1)
    out = out or Path("spinbot-out") / f"{job.id}{Path(key).suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    runner.artifacts.download(key, out)
    typer.echo(str(out))


def _runner():
    from spinbot.control.runner import Runner
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings

    setup_logging("WARNING")
    return Runner(get_settings())


@app.command()
def run(
    prompt: Optional[str] = typer.Option(None, help="What the video is about (the LLM writes the script from it)."),
    image: Optional[Path] = typer.Option(None, help="Portrait image."),
    voice: Optional[Path] = typer.Option(None, help="Narrator voice sample to clone."),
    ref_text: Optional[str] = typer.Option(None, "--ref-text", help="Transcript of the voice sample."),
    pipeline: str = typer.Option(DEFAULT_PIPELINE, help="Pipeline name from pipelines.json."),
    set_: list[str] = typer.Option([], "--set", help="NODE.PARAM=VALUE, repeatable."),
    out: Optional[Path] = typer.Option(None, help="Where to copy the final video."),
    resume: Optional[str] = typer.Option(None, help="Continue job JOB_ID from its last finished node."),
    priority: Optional[int] = typer.Option(None, min=1, help="Queue priority of the job's tasks (1 runs first)."),
) -> None:
    """Run a job to the end with a progress bar per node, then print the output path."""
    try:
        runner = _runner()
        if resume:
            job_id = runner.jobs.get(resume).id
        else:
            missing = [name for name, v in (("--prompt", prompt), ("--image", image), ("--voice", voice)) if not v]
            if missing:
                raise InputError(f"missing {', '.join(missing)} (or use --resume JOB_ID)")
            job_id = runner.create_job(pipeline, prompt, image, voice, ref_text, parse_sets(set_), priority=priority)
            err_console.print(f"job {job_id}", highlight=False)
        job = _run_with_progress(runner, job_id)
        _finish(runner, job, out)
    except SpinBotError as err:
        fail(str(err))


@app.command()
def demo(
    out: Path = typer.Option(Path("spinbot-out/demo.mp4"), help="Where to write the demo video."),
    prompt: str = typer.Option(None, help="Prompt for the script (default: a short one about learning)."),
    set_: list[str] = typer.Option([], "--set", help="NODE.PARAM=VALUE, repeatable."),
) -> None:
    """Run the default pipeline on sample inputs (scikit-image's astronaut, the Beckett speech sample)."""
    from spinbot import samples

    try:
        runner = _runner()
        image = samples.portrait_path(runner.settings.data_dir / "samples")
        job_id = runner.create_job(DEFAULT_PIPELINE, prompt or samples.DEMO_PROMPT, image, samples.voice_path(),
                                   samples.BECKETT_TRANSCRIPT, parse_sets(set_))
        err_console.print(f"job {job_id}", highlight=False)
        job = _run_with_progress(runner, job_id)
        _finish(runner, job, out)
    except SpinBotError as err:
        fail(str(err))


@pipelines_app.command("list")
def pipelines_list() -> None:
    from spinbot.pipelines.spec import load_pipelines

    try:
        for name, spec in load_pipelines().items():
            typer.echo(f"{name}\t{' -> '.join(spec.topological_order())}")
    except SpinBotError as err:
        fail(str(err))


@pipelines_app.command("show")
def pipelines_show(name: str) -> None:
    from spinbot.pipelines.spec import get_pipeline

    try:
        spec = get_pipeline(name)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(json.dumps(spec.model_dump(by_alias=True, exclude={"name"}), indent=2))


@pipelines_app.command("validate")
def pipelines_validate(file: Path) -> None:
    from spinbot.pipelines.spec import load_pipelines_file

    try:
        pipelines = load_pipelines_file(file)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(f"ok: {len(pipelines)} pipeline(s): {', '.join(pipelines)}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
) -> None:
    """Start the HTTP API (and the web page) with uvicorn; jobs run in this process's control plane."""
    import ipaddress

    import uvicorn

    from spinbot.api.app import create_app
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
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


@app.command()
def worker(
    queues: Optional[str] = typer.Option(None, help="Comma-separated queues to serve (default: "
                                                    "SPINBOT_WORKER_QUEUES, gpu,cpu)."),
) -> None:
    """Run python-plane tasks from the Redis queues (SPINBOT_REDIS_URL) until SIGTERM."""
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings
    from spinbot.worker.main import run_worker

    settings = get_settings()
    setup_logging(settings.log_level)
    try:
        run_worker([q.strip() for q in queues.split(",") if q.strip()] if queues else None, settings)
    except SpinBotError as err:
        fail(str(err))


def main() -> None:  # python -m spinbot
    app()


if __name__ == "__main__":
    sys.exit(main())
