"""`spinbot run`'s progress for long renders: the time a running node has left, and plain lines in a log file (rich
draws nothing until the end where stderr is not a terminal)."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from spinbot import cli_progress
from spinbot.cli import app
from spinbot.cli_progress import NodeTimeColumn, PlainLines, TimeLeftColumn
from spinbot.samples import portrait_path, voice_path
from spinbot.state.events import Event
from spinbot.state.models import utcnow
from spinbot.state.store import NodeView
from spinbot.state.time_left import TimeLeft


def test_the_running_nodes_bar_shows_its_time_left():
    progress = Progress(TimeLeftColumn())
    estimate = TimeLeft()
    bar = progress.add_task("", status="running", left=estimate)
    column = TimeLeftColumn()
    assert column.render(progress.tasks[bar]).plain == ""  # nothing guessed before something is measured
    now = cli_progress.time.monotonic()
    estimate.report(0.1, now - 40)
    estimate.report(0.2, now - 20)
    assert column.render(progress.tasks[bar]).plain == ""  # the first interval may be a set-up: not measured
    estimate.report(0.6, now)  # 0.4 in 20 s: 0.4 left takes 20 s
    assert column.render(progress.tasks[bar]).plain in ("~0:00:20 left", "~0:00:19 left")
    progress.update(bar, status="succeeded")
    assert column.render(progress.tasks[bar]).plain == ""
    assert any(isinstance(c, TimeLeftColumn) for c in cli_progress._bars().columns)


def test_node_bars_show_the_time_left_their_events_carry_and_the_jobs_once_every_node_has_one(monkeypatch):
    # one estimate, made where the progress is published (spinbot.state.time_left), for the CLI, the API and the page
    now = [0.0]
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: now[0])
    talk = SimpleNamespace(node_id="talk", status="pending", message=None, seconds=None, attempts=0)
    tts = SimpleNamespace(node_id="tts", status="succeeded", message=None, seconds=3.0, attempts=1)
    job = SimpleNamespace(id="j", status="running", progress=0.0, nodes=[tts, talk])
    progress = Progress()
    bars = cli_progress.NodeBars(progress, runner=None, job=job)
    column, job_bar = TimeLeftColumn(), progress.tasks[bars.job_bar]
    bars.on_event(Event("j", "node", "running", "talk", progress=0.05, message="speech and portrait ready"))
    assert bars.estimates["talk"].seconds(0.0) is None  # nothing measured: nothing shown
    assert column.render(job_bar).plain == ""
    now[0] = 600.0
    bars.on_event(Event("j", "node", "running", "talk", progress=0.07, message="window 1/10", seconds_left=930.0))
    now[0] = 610.0
    assert bars.estimates["talk"].seconds(610.0) == pytest.approx(920.0)  # counted down between events
    assert column.render(progress.tasks[bars.bars["talk"]]).plain == "~0:15:20 left"
    assert column.render(job_bar).plain == "~0:15:20 left"  # the one unfinished node has one: the job's too


def test_plain_lines_on_each_state_change_and_every_ten_seconds_while_running(capsys):
    lines = PlainLines()
    lines.show("talk", "queued", 0.0, "", None, 0.0)
    lines.show("talk", "running", 0.05, "window 1/40", None, 1.0)
    lines.show("talk", "running", 0.1, "window 4/40", None, 6.0)  # 5 s later: not yet
    lines.show("talk", "running", 0.3, "window 12/40", 24.0, 11.5)
    lines.show("talk", "succeeded", 1.0, "took 0:00:40", None, 12.0)
    assert capsys.readouterr().err.splitlines() == [
        "talk           queued       0%",
        "talk           running      5%  window 1/40",
        "talk           running     30%  window 12/40 (~0:00:24 left)",
        "talk           succeeded  100%  took 0:00:40",
    ]


def test_run_in_a_log_file_prints_each_node_as_it_goes(spinbot_env, tmp_path):
    """Piped to a file, nothing but `job ID` came until the job ended (a 7-minute render was silent)."""
    args = ["run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())]
    result = CliRunner().invoke(app, [*args, "--set", "script.text=Ever tried.", "--out", str(tmp_path / "o.mp4")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for node in ("script", "f5_to_tts", "infinite_talk", "upscale_video"):
        running = [i for i, line in enumerate(lines) if re.match(rf"{node} +running +\d+%", line)]
        done = [i for i, line in enumerate(lines) if re.match(rf"{node} +succeeded +100%  took \d:\d\d:\d\d$", line)]
        assert running and done and running[0] < done[0], (node, lines)
    assert re.match(
        r"upscale_video +running +\d+%  upscaled \d+/\d+ frames", lines[_first(lines, "upscale_video  run")]
    )


def _first(lines: list[str], start: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(start))


def test_node_bars_show_the_jobs_overall_progress_and_a_nodes_new_attempt(monkeypatch, capsys):
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: next(clock))
    talk = SimpleNamespace(node_id="talk", status="running", message=None, seconds=None, attempts=1)
    job = SimpleNamespace(id="j", status="running", progress=0.25, nodes=[talk])
    progress = Progress()
    bars = cli_progress.NodeBars(progress, runner=None, job=job)
    bars.plain = PlainLines()  # as in a log file
    overall = progress.tasks[bars.job_bar]
    assert (overall.fields["node"], overall.completed) == ("job", 0.25)
    bars.on_event(
        Event("j", "node", "running", "talk", progress=0.2, message="window 2/10", attempt=1, job_progress=0.4)
    )
    bars.on_event(
        Event("j", "node", "running", "talk", progress=0.6, message="window 6/10", attempt=1, job_progress=0.7)
    )
    assert overall.completed == 0.7
    # The node starts again (another worker): a new attempt from 0, whose rate is measured afresh.
    bars.on_event(Event("j", "node", "running", "talk", progress=0.0, message="started again", attempt=2))
    bars.on_event(Event("j", "node", "running", "talk", progress=0.1, message="window 1/10", attempt=2))
    talk_bar = progress.tasks[bars.bars["talk"]]
    assert talk_bar.completed == 0.1 and talk_bar.description == "attempt 2: window 1/10"
    bars.on_event(Event("j", "node", "running", "talk", progress=0.7, message="window 7/10", attempt=1))  # late
    assert talk_bar.completed == 0.1 and talk_bar.description == "attempt 2: window 1/10"
    assert bars.estimates["talk"].seconds(10.0) is None  # the first attempt's estimate does not linger
    assert overall.completed == 0.7  # the job's progress holds while the node catches up
    bars.on_event(Event("j", "job", "succeeded", progress=1.0))
    assert (overall.completed, overall.fields["status"]) == (1.0, "succeeded")
    assert "job            succeeded  100%" in capsys.readouterr().err.splitlines()


def test_a_plain_line_carries_the_whole_message_on_one_line(capsys):
    # in a log file a failed node's line was cut to 60 characters and wrapped at 80 columns:
    # "infinite_talk  failed       5%  CLIP vision checkpoint clip_vision_h.safetensors" / "is not a re"
    message = "CLIP vision checkpoint clip_vision_h.safetensors is not a readable safetensors file: cut short: 1 of 2"
    talk = SimpleNamespace(node_id="infinite_talk", status="running", message=None, seconds=None, attempts=1)
    bars = cli_progress.NodeBars(
        Progress(), runner=None, job=SimpleNamespace(id="j", status="running", progress=0.0, nodes=[talk])
    )
    bars.plain = PlainLines()  # as in a log file
    bars.on_event(Event("j", "node", "failed", "infinite_talk", progress=0.05, message=message, attempt=1))
    assert capsys.readouterr().err.splitlines() == [f"infinite_talk  failed       5%  {message}"]


def test_a_node_running_when_the_watching_began_shows_its_time_since_it_started(monkeypatch):
    # `spinbot jobs watch` of a talking head 2 minutes in showed 0:00:00, counting from when the watching began
    started = utcnow() - timedelta(seconds=125)
    talk = NodeView("talk", "talk.t", "python", "running", 0.4, "window 2/5", 1, None, None, started, None)
    pending = NodeView("up", "up.t", "python", "pending", 0.0, None, 0, None, None, None, None)
    job = SimpleNamespace(id="j", status="running", progress=0.3, nodes=[talk, pending], now=utcnow())
    progress = Progress()
    bars = cli_progress.NodeBars(progress, runner=None, job=job)
    for event in cli_progress.RowChanges(job).events(job):
        bars.on_event(event)
    shown = NodeTimeColumn().render(progress.tasks[bars.bars["talk"]]).plain
    assert shown in ("0:02:05", "0:02:06"), shown
    assert NodeTimeColumn().render(progress.tasks[bars.bars["up"]]).plain == "-:--:--"


def test_watching_reads_a_running_nodes_time_left_from_its_row():
    ends = utcnow() + timedelta(seconds=300)
    talk = NodeView("talk", "talk.t", "python", "running", 0.4, "window 2/5", 1, None, None, utcnow(), None, ends)
    job = SimpleNamespace(id="j", status="running", progress=0.3, nodes=[talk], now=utcnow())
    (event,) = cli_progress.RowChanges(job).events(job)
    assert event.seconds_left == pytest.approx(300.0, abs=2.0)
