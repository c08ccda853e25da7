"""`spinbot --help` as a new user reads it: every command listed on one line, and the options' help saying what the
code does when they are left out."""

from __future__ import annotations

import click
import typer

from spinbot.cli import app


def _commands(group: click.Group, prefix: str = "spinbot") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
    return found


def test_every_command_is_listed_in_one_line():
    # gc's first paragraph ran over two lines of its docstring: `spinbot --help` broke its entry after "the window"
    for name, command in _commands(typer.main.get_command(app)):  # type: ignore[arg-type]
        summary = (command.help or "").strip().split("\n\n")[0]
        assert summary and "\n" not in summary, name


def test_run_says_where_the_video_goes_without_out():
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    out = next(param for param in run.params if param.name == "out")
    assert "spinbot-out/JOB_ID.mp4" in out.help  # what deliver() writes when --out is left out
