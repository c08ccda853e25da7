"""`spinbot pipelines list | show | validate`: the pipelines this install runs, and a pipelines file checked."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from spinbot.cli_style import Command, OneErrorStyle, fail
from spinbot.errors import SpinBotError

app = typer.Typer(cls=OneErrorStyle, no_args_is_help=True, help="List, show and validate pipelines.")


@app.command("list", cls=Command)
def pipelines_list() -> None:
    """Every pipeline, with its nodes in order."""
    from spinbot.pipelines.spec import load_pipelines

    try:
        for name, spec in load_pipelines().items():
            typer.echo(f"{name}\t{' -> '.join(spec.topological_order())}")
    except SpinBotError as err:
        fail(str(err))


@app.command("show", cls=Command)
def pipelines_show(name: str = typer.Argument(..., metavar="NAME", help="A pipeline name.")) -> None:
    """Print a pipeline as JSON."""
    from spinbot.pipelines.spec import get_pipeline

    try:
        spec = get_pipeline(name)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(json.dumps(spec.model_dump(by_alias=True, exclude={"name"}), indent=2))


@app.command("validate", cls=Command)
def pipelines_validate(file: Path = typer.Argument(..., metavar="FILE", help="A pipelines.json to check.")) -> None:
    """Check a pipelines file: its format, its tasks and its graph."""
    from spinbot.pipelines.spec import load_pipelines_file

    try:
        pipelines = load_pipelines_file(file)
    except SpinBotError as err:
        fail(str(err))
    typer.echo(f"ok: {len(pipelines)} pipeline(s): {', '.join(pipelines)}")
