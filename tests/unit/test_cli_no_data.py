"""Commands that work on jobs made before (`jobs list | show | watch`, `cancel`, `gc`, `run --resume`), run in a folder
with no SpinBot data: one line saying where they looked and how to point at the data, and nothing created (they
made an empty ./spinbot-data with a database in whatever folder they ran in)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.settings import reset_settings


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def said_no_data(spinbot_env) -> str:
    return (
        f"no SpinBot data found at {spinbot_env.resolve()} (no spinbot.db there): run spinbot in the folder you made "
        "your jobs in, or set SPINBOT_DATA_DIR to their data folder"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "show", "nope"),
        ("jobs", "watch", "nope"),
        ("cancel", "nope"),
        ("gc", "--job", "nope"),
        ("run", "--resume", "nope"),
    ],
    ids=["show", "watch", "cancel", "gc-job", "resume"],
)
def test_a_job_command_without_data_says_so_and_creates_nothing(spinbot_env, args):
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {said_no_data(spinbot_env)}"
    assert not spinbot_env.exists()


def test_jobs_list_without_data_is_an_empty_answer_that_says_where_it_looked(spinbot_env):
    result = invoke("jobs", "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.strip() == said_no_data(spinbot_env)
    assert not spinbot_env.exists()


def test_jobs_list_json_without_data_is_an_empty_list(spinbot_env):
    result = invoke("jobs", "list", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert not spinbot_env.exists()


def test_gc_without_data_has_nothing_to_delete(spinbot_env):
    result = invoke("gc", "--older-than", "30")
    assert result.exit_code == 0
    assert result.stderr.strip() == f"{said_no_data(spinbot_env)}; nothing to delete"
    assert not spinbot_env.exists()


def test_a_data_folder_without_a_database_creates_none(spinbot_env):
    spinbot_env.mkdir()  # an artifact folder alone (a copy, a half-deleted install) holds no jobs
    result = invoke("jobs", "show", "nope")
    assert result.exit_code == 2
    assert said_no_data(spinbot_env) in result.output
    assert list(spinbot_env.iterdir()) == []


def test_a_data_folder_setting_that_cannot_be_one_is_named(spinbot_env, use_settings, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    use_settings(data_dir=a_file)
    assert invoke("cancel", "nope").output.strip() == f"error: SPINBOT_DATA_DIR={a_file}: not a folder"
    use_settings(data_dir="/proc/nope")  # nothing can be made there, and nothing is there
    result = invoke("cancel", "nope")
    assert result.exit_code == 2
    assert result.output.startswith("error: no SpinBot data found at /proc/nope (no spinbot.db there)")


def test_a_sqlite_database_url_to_no_file_is_named_by_its_setting(spinbot_env, monkeypatch, tmp_path):
    missing = tmp_path / "elsewhere" / "jobs.db"
    monkeypatch.setenv("SPINBOT_DATABASE_URL", f"sqlite:///{missing}")
    reset_settings()
    result = invoke("jobs", "list")
    assert result.exit_code == 0
    assert result.stderr.strip() == (
        f"no SpinBot data found: the SQLite file SPINBOT_DATABASE_URL names ({missing}) does not exist"
    )
    assert not missing.parent.exists()


def test_once_a_job_was_made_the_commands_read_it(spinbot_env):
    from spinbot.cli_checks import open_runner

    open_runner()  # what `spinbot run` opens: the data folder and its database
    assert invoke("jobs", "list").exit_code == 0
    shown = invoke("jobs", "show", "nope")
    assert shown.exit_code == 2
    assert shown.output.startswith("error: job 'nope' not found in ")


def test_gc_without_an_age_is_the_same_usage_error_with_or_without_data(spinbot_env):
    # without data it said "nothing to delete" and exited 0: the missing --older-than went unnoticed
    said = "error: nothing to delete: pass --older-than DAYS or --job ID, or set SPINBOT_JOB_RETENTION_DAYS"
    result = invoke("gc")
    assert (result.exit_code, result.output.strip()) == (2, said)
    assert not spinbot_env.exists()
