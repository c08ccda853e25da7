"""The `spinbot` command run in process (typer's CliRunner), its output as the non-blank lines a person reads."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from spinbot.cli import app


def run_cli_result(*args: str) -> tuple[int, list[str], BaseException | None]:
    """Exit code, non-blank output lines, and the exception the command ended with (SystemExit included)."""
    result = CliRunner().invoke(app, list(args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines, result.exception


def run_cli(*args: str) -> tuple[int, list[str]]:
    code, lines, _ = run_cli_result(*args)
    return code, lines


def made_database() -> None:
    """The embedded data folder and its database, as `spinbot run` makes them first: the commands on existing jobs
    read it (they make none: tests/unit/test_cli_no_data.py)."""
    from spinbot.cli_checks import open_runner

    open_runner()


def stored_job_files(data_dir: Path) -> list[Path]:
    """Every file under the embedded data folder's jobs/ (inputs and artifacts): a refused run leaves none."""
    jobs = data_dir / "jobs"
    return [p for p in jobs.rglob("*") if p.is_file()] if jobs.exists() else []
