"""Lines a new user met while following the README: each says what is wrong and what to do, in the user's words."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.errors import SettingsError
from spinbot.settings import get_settings, reset_settings
from tests.support.cli import made_database


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SPINBOT_TTS_LANGUAGE", "german", "SPINBOT_TTS_LANGUAGE='german' refused: 'auto' or a language"),
        ("SPINBOT_CALLBACK_ALLOW_HOSTS", "exa mple", "SPINBOT_CALLBACK_ALLOW_HOSTS='exa mple' refused: "),
    ],
)
def test_a_refused_setting_says_why_without_pydantics_prefix(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    reset_settings()
    try:
        with pytest.raises(SettingsError) as refused:
            get_settings()
    finally:
        reset_settings()
    assert str(refused.value).startswith(says)
    assert "Value error" not in str(refused.value)


@pytest.mark.parametrize(
    "args",
    [("jobs", "show", "nope"), ("jobs", "watch", "nope"), ("cancel", "nope"), ("run", "--resume", "nope")],
    ids=["show", "watch", "cancel", "resume"],
)
def test_an_unknown_job_names_the_database_looked_in_and_how_to_list_it(spinbot_env, args):
    # `spinbot jobs show ID` from another folder than the one the job was made in: "job 'ID' not found" said nothing
    # of where it looked (a folder with no database at all: tests/unit/test_cli_no_data.py)
    made_database()
    result = CliRunner().invoke(app, list(args))
    db = spinbot_env.resolve() / "spinbot.db"
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: job 'nope' not found in {db} (SPINBOT_DATA_DIR; by default ./spinbot-data in the folder spinbot runs "
        "in): `spinbot jobs list` lists the jobs there"
    )


def test_no_jobs_names_the_database_looked_in(spinbot_env):
    made_database()
    result = CliRunner().invoke(app, ["jobs", "list"])
    assert result.exit_code == 0
    db = spinbot_env.resolve() / "spinbot.db"
    assert result.output.strip() == (
        f"no jobs in {db} (SPINBOT_DATA_DIR; by default ./spinbot-data in the folder spinbot runs in)"
    )


def test_a_database_url_is_named_by_its_setting_never_its_credentials(spinbot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SPINBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    reset_settings()
    try:
        made_database()
        result = CliRunner().invoke(app, ["jobs", "show", "nope"])
    finally:
        reset_settings()
    assert result.output.strip() == (
        "error: job 'nope' not found in the database SPINBOT_DATABASE_URL names: `spinbot jobs list` lists its jobs"
    )


def test_a_node_that_succeeded_before_the_bars_began_shows_a_full_bar_not_a_pulse():
    # `spinbot jobs watch` of a job past its speech, or `run --resume`: the nodes already done were bars never
    # started, which rich draws as its "working, progress unknown" pulse, animated beside "100% succeeded".
    from rich.progress import Progress

    from spinbot import cli_progress

    done = SimpleNamespace(node_id="f5_to_tts", status="succeeded", message="speech written", seconds=1.5, attempts=1)
    later = SimpleNamespace(node_id="upscale_video", status="pending", message=None, seconds=None, attempts=0)
    job = SimpleNamespace(id="j", status="running", progress=0.05, nodes=[done, later])
    progress = Progress()
    bars = cli_progress.NodeBars(progress, runner=None, job=job)
    finished, waiting = (progress.tasks[bars.bars[n]] for n in ("f5_to_tts", "upscale_video"))
    assert finished.started and finished.completed == 1
    assert not waiting.started  # a node not begun stays unstarted: "-:--:--"
