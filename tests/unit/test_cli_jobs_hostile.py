"""`spinbot jobs show | watch` with hostile job data (a probe of 2026-12-05): a job's error and its nodes' messages and
errors are text from tasks, and they may quote what an API client sent. `jobs show` printed them as they were, so an
escape sequence in one redrew or retitled the user's terminal (`\\x1b]0;...\\x07`, `\\x1b[2J`) and a newline made a
line that looked like another field; the bars read a message as rich markup (`[/]` in one failed the redraw). Each
item is one line now, its unprintable characters escaped."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from spinbot import cli_progress
from spinbot.cli import app
from spinbot.control.runner import Runner
from tests.unit.test_progress import ScriptedDispatcher, request_  # noqa: F401 - request_: a fixture

HOSTILE = "boom\x1b]0;pwned\x07\x1b[2J\nerror     nothing wrong\u202ehidden [/]"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")


def hostile_failure(report, is_cancelled):
    report(0.5, f"window 1/2 {HOSTILE}")
    raise RuntimeError(HOSTILE)


@pytest.fixture
def failed(spinbot_env, request_) -> str:  # noqa: F811 - the fixture imported above
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": hostile_failure}))
    job_id = runner.create_job(request_)
    runner.run(job_id)
    runner.jobs.set_job_status(job_id, "failed", HOSTILE)  # the job's own error, as a task could word it
    return job_id


def test_jobs_show_prints_hostile_errors_as_one_escaped_line_each(failed):
    result = CliRunner().invoke(app, ["jobs", "show", failed])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert not [line for line in lines if CONTROL.search(line)], lines
    assert [line for line in lines if line.startswith("error")] == [
        r"error     boom\x1b]0;pwned\x07\x1b[2J\nerror     nothing wrong\u202ehidden [/]"
    ]
    talk = [line for line in lines if "infinite_talk" in line and "failed" in line]
    assert len(talk) == 1 and r"\x1b[2J\nerror" in talk[0], lines


def test_a_progress_line_escapes_a_nodes_message():
    assert (
        cli_progress.node_line("talk", "running", 0.5, "a\x1b[2Jb\nc")
        == r"talk           running     50%  a\x1b[2Jb\nc"
    )


def test_a_bar_shows_a_message_as_text_not_markup():
    out = io.StringIO()
    bars = cli_progress._bars()
    bars.add_task("window 1/2 [/] [bold]x", node="talk", status="running", seconds=None, left=None)
    # the redraw: rich.errors.MarkupError "closing tag '[/]' at position 11 doesn't match any open tag"
    Console(file=out, width=200).print(bars.make_tasks_table(bars.tasks))
    assert "window 1/2 [/] [bold]x" in out.getvalue()
