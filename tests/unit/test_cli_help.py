"""`spinbot --help` as a new user reads it: every command listed on one line, and the options' help saying what the
code does when they are left out."""

from __future__ import annotations

from itertools import pairwise

import click
import typer
from typer.testing import CliRunner

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


def _description(help_text: str) -> list[list[str]]:
    """The paragraphs of a help screen's description (between its usage line and its first box), line by line."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.lstrip().startswith("╭")), len(lines))
    paragraphs: list[list[str]] = [[]]
    for line in lines[start:end]:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [paragraph for paragraph in paragraphs if paragraph]


def test_every_help_wraps_at_the_terminal_width():
    # `spinbot run --help` at 80 columns broke mid-line after "(exit status 128 + the": typer's rich help kept the
    # docstring's own line breaks, made at 120 columns
    width, text_width = 80, 78  # rich pads the description by one column each side
    runner = CliRunner(env={"COLUMNS": str(width)})
    for name, _ in [("spinbot", None), *_commands(typer.main.get_command(app))]:  # type: ignore[arg-type]
        result = runner.invoke(app, [*name.split()[1:], "--help"])
        assert result.exit_code == 0, name
        paragraphs = _description(result.output)
        assert paragraphs, name
        for paragraph in paragraphs:
            for line, following in pairwise(paragraph):
                # a line is broken early where the next line's first word would have fitted on it
                assert len(line) + 1 + len(following.split()[0]) > text_width, (name, line)
