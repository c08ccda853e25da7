"""A job run by the CLI: one bar per node with the node's own time and, while it runs, the time it has left (plain
lines as well where stderr is not a terminal: a log file); then its video copied out, or, stopped by Ctrl-C, SIGTERM
or SIGHUP, the command that resumes it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn
from rich.text import Text

from spinbot.cli_style import err_console, fail, inert
from spinbot.state.events import Event
from spinbot.state.store import FINAL_STATES, INTERRUPTED
from spinbot.state.time_left import Countdown, job_seconds_left

PLAIN_EVERY_SECONDS = 10.0  # plain lines: a running node's progress at most this often
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # what timeout, systemd and docker stop send; a closed terminal


def clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class NodeTimeColumn(ProgressColumn):
    """A node's own time: the recorded seconds of a finished node (also one that finished before --resume), the
    time since it started while it runs (its recorded start, `since`, for one already running when the bars began:
    `spinbot jobs watch`), nothing before it starts."""

    def render(self, task: Task) -> Text:
        seconds = task.fields.get("seconds")
        since = task.fields.get("since")
        if seconds is None and since is not None:
            seconds = max(0.0, time.time() - since)
        if seconds is None:
            if not task.started:
                return Text("-:--:--", style="progress.elapsed")
            seconds = task.elapsed or 0
        return Text(clock(seconds), style="progress.elapsed")


class TimeLeftColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        estimate = task.fields.get("left")
        seconds = estimate.seconds(time.monotonic()) if task.fields.get("status") == "running" and estimate else None
        return Text(f"~{clock(seconds)} left" if seconds is not None else "", style="progress.remaining")


class PlainLines:
    """Progress for a log file: a line when a node's state changes, and while it runs at most every
    PLAIN_EVERY_SECONDS (node, percent, its message whole, the time left once measured)."""

    def __init__(self) -> None:
        self.shown: dict[str, tuple[str, float]] = {}  # node -> (status, when) of its last line

    def show(self, node: str, status: str, progress: float, message: str, left: float | None, now: float) -> None:
        last = self.shown.get(node)
        if last is not None and last[0] == status and now - last[1] < PLAIN_EVERY_SECONDS:
            return
        self.shown[node] = (status, now)
        detail = message + (f" (~{clock(left)} left)" if left is not None else "")
        line = node_line(node, status, progress, detail)
        err_console.print(line, highlight=False, markup=False, soft_wrap=True)  # a log file's line is never cut


def node_line(node: str, status: str, progress: float, detail: str) -> str:
    """A node's plain line (a log file's progress, `spinbot jobs show`): name, state, percent, what it says (a task's
    message or error, which may quote what an API client sent: unprintable characters escaped, one line)."""
    return f"{inert(node):<14} {status:<10} {progress:>4.0%}  {inert(detail)}".rstrip()


def invoked_as() -> str:
    """`spinbot` as the user ran it, so a printed command works from where they are: `.venv/bin/spinbot` as typed,
    `python -m spinbot` with their interpreter, `spinbot` when that is what PATH finds (or when run otherwise)."""
    argv0 = sys.argv[0] if sys.argv else ""
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "spinbot":  # python -m spinbot
        python = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable
        return f"{shlex.quote(python)} -m spinbot"
    if not path.name.startswith("spinbot"):  # embedded (tests, another program): the console script's name
        return "spinbot"
    found = shutil.which(path.name)
    if found and path.exists() and os.path.samefile(found, path):
        return path.name
    return shlex.quote(argv0)


def resume_command(job_id: str, out: Path | None) -> str:
    """The command that continues the job, writing where this one would have (--out)."""
    return f"{invoked_as()} run --resume {job_id}" + (f" --out {shlex.quote(str(out))}" if out is not None else "")


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, met as Ctrl-C is: a KeyboardInterrupt, so the runner marks the job interrupted."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals_stop_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run as Ctrl-C does. Their default kills the process at once, leaving the job
    `running` under a lease nobody renews, with no word to the user."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        for sig in STOP_SIGNALS:  # once: a second signal must not cut short the marking of the job
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class NodeBars:
    """A bar for the whole job, then one per node, fed by the job's events; plain lines as well where stderr is not a
    terminal (rich draws nothing there until the end). A running node's time left is the one its events carry
    (`seconds_left`, estimated where the progress is published: spinbot.state.time_left), counted down between them;
    the job's, once every unfinished node has one. A node that starts again (a new attempt) starts its bar and its
    time estimate over, and says which attempt it is."""

    def __init__(self, progress: Progress, runner, job) -> None:
        self.progress, self.runner, self.job_id = progress, runner, job.id
        self.plain = None if err_console.is_terminal else PlainLines()
        self.estimates: dict[str, Countdown] = {n.node_id: Countdown(None, 0.0) for n in job.nodes}
        self.statuses = {n.node_id: n.status for n in job.nodes}
        left = JobTimeLeft(self)
        self.job_bar = progress.add_task(
            "", total=1.0, node="job", status=job.status, start=False, completed=job.progress, seconds=None, left=left
        )
        self.attempts = {n.node_id: n.attempts for n in job.nodes}
        self.bars = {n.node_id: self._add(n) for n in job.nodes}
        for node in job.nodes:  # in a log file: the nodes that finished before a --resume, with their recorded time
            if self.plain is not None and node.status == "succeeded" and node.seconds is not None:
                self.plain.show(node.node_id, node.status, 1.0, f"took {clock(node.seconds)}", None, time.monotonic())

    def _add(self, node) -> Any:
        finished = node.status == "succeeded"
        return self.progress.add_task(
            node.message or "",
            total=1.0,
            node=node.node_id,
            status=node.status,
            start=finished,  # a bar never started is rich's pulse ("working, progress unknown"), not a finished one
            completed=1 if finished else 0,
            seconds=node.seconds if finished else None,
            since=_started(node),
            left=self.estimates[node.node_id],
        )

    def on_event(self, event) -> None:
        if event.kind == "job":
            self._on_job_event(event)
            return
        if event.kind != "node" or event.node_id not in self.bars:
            return
        node, status, now = event.node_id, event.status, time.monotonic()
        if event.attempt is not None and event.attempt < self.attempts[node]:
            return  # a late event of an attempt that was replaced: it would move the new attempt's bar back
        self._note_attempt(node, event.attempt)
        self.statuses[node] = status
        self.estimates[node] = Countdown(event.seconds_left if status == "running" else None, now)
        done = 1.0 if status == "succeeded" else event.progress
        seconds = self.runner.jobs.get(self.job_id).node(node).seconds if status == "succeeded" else None
        message = self._described(node, (event.message or "")[:60])
        self.progress.start_task(self.bars[node])  # the node's clock starts at its first event (no-op once started)
        bar, estimate = self.bars[node], self.estimates[node]
        self.progress.update(bar, completed=done, status=status, description=message, seconds=seconds, left=estimate)
        if event.job_progress is not None:
            self.progress.start_task(self.job_bar)
            self.progress.update(self.job_bar, completed=event.job_progress)
        if self.plain is not None:
            left = self.estimates[node].seconds(now)
            took = f"took {clock(seconds)}" if seconds is not None else self._described(node, event.message or "")
            self.plain.show(node, status, done, took, left, now)

    def _on_job_event(self, event) -> None:
        """The job's state and overall progress (a plain line on each change of state)."""
        self.progress.start_task(self.job_bar)
        self.progress.update(self.job_bar, completed=event.progress, status=event.status)
        if self.plain is not None:
            self.plain.show("job", event.status, event.progress, "", None, time.monotonic())

    def _note_attempt(self, node: str, attempt: int | None) -> None:
        """A higher attempt is the node starting again from 0: its clock starts at this event."""
        if attempt is not None and attempt > self.attempts[node]:
            if self.attempts[node] > 0:
                self.progress.reset(self.bars[node], start=True, since=None)
            self.attempts[node] = attempt

    def _described(self, node: str, message: str) -> str:
        """The task's message, after `attempt N` from the second attempt on (`attempt 2`, not `attempt 2:`, alone)."""
        attempt = f"attempt {self.attempts[node]}" if self.attempts[node] > 1 else ""
        return inert(": ".join(part for part in (attempt, message) if part))  # a bar's line: one, no escapes


class JobTimeLeft:
    """The job bar's time left: its unfinished nodes' together, once every one of them has one (job_seconds_left)."""

    def __init__(self, bars: NodeBars) -> None:
        self.bars = bars

    def seconds(self, now: float) -> float | None:
        estimates = self.bars.estimates
        return job_seconds_left((status, estimates[node].seconds(now)) for node, status in self.bars.statuses.items())


def _started(node) -> float | None:
    """When a node already in flight as the bars begin started (Unix seconds), from its row: `spinbot jobs watch`
    shows its time since then, not since the watching began."""
    if node.status not in ("queued", "running") or getattr(node, "started_at", None) is None:
        return None
    moment = node.started_at
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_with_progress(runner, job_id: str, out: Path | None = None) -> Any:
    """Run the job with its progress shown; stopped (Ctrl-C, SIGTERM, SIGHUP): the job is marked interrupted, the
    command that resumes it is printed, and the exit status is 128 + the signal (130 for Ctrl-C)."""
    stopped = None
    with _bars() as progress, signals_stop_like_ctrl_c():
        unsubscribe = runner.events.subscribe(NodeBars(progress, runner, runner.jobs.get(job_id)).on_event)
        try:
            return runner.run(job_id)
        except KeyboardInterrupt as err:  # the runner marked the job interrupted
            stopped = err
        finally:
            unsubscribe()
    _say_interrupted(job_id, out)
    raise typer.Exit(128 + getattr(stopped, "signum", signal.SIGINT))


WATCH_POLL_SECONDS = 1.0  # `spinbot jobs watch`: how often it reads the job's rows
ENDED_STATES = (*FINAL_STATES, INTERRUPTED)  # nobody runs the job on from these on its own


def watch_with_progress(runner, job_id: str) -> Any:
    """Follow a job that another process runs (`spinbot serve`, another `spinbot run`) with `spinbot run`'s bars until
    it ends; returns its last view. It reads the job's rows in the database (written at least every
    PROGRESS_DB_INTERVAL while a node reports), which every process that runs jobs writes, whatever its event bus.
    Ctrl-C stops the watching only (a KeyboardInterrupt for the caller): this process never holds the job."""
    job = runner.jobs.get(job_id)
    with _bars() as progress:
        bars, changes = NodeBars(progress, runner, job), RowChanges(job)
        while True:
            for event in changes.events(job):  # at once the first time: a running node's bar shows where it is
                bars.on_event(event)
            if job.status in ENDED_STATES:
                return job
            time.sleep(WATCH_POLL_SECONDS)
            job = runner.jobs.get(job_id)


class RowChanges:
    """What changed in a job's rows since the last read, as the events its driver published: what NodeBars draws."""

    def __init__(self, job) -> None:
        # the nodes NodeBars starts from as they are; a running one's state comes as an event at the first read
        self.nodes = {n.node_id: _row_state(n) for n in job.nodes if n.status in ("pending", "succeeded")}
        self.status = job.status

    def events(self, job) -> list[Event]:
        changed = [node for node in job.nodes if self.nodes.get(node.node_id) != _row_state(node)]
        self.nodes.update((node.node_id, _row_state(node)) for node in changed)
        found = [_node_event(job, node) for node in changed]
        if job.status != self.status:
            self.status = job.status
            found.append(Event(job.id, "job", job.status, progress=job.progress))
        return found


def _row_state(node) -> tuple[str, float, str | None, int, Any]:
    return node.status, node.progress, node.message, node.attempts, node.estimated_end_at


def _node_event(job, node) -> Event:
    message = node.error if node.status == "failed" else node.message
    return Event(
        job.id,
        "node",
        node.status,
        node.node_id,
        progress=node.progress,
        message=message,
        attempt=node.attempts,
        job_progress=job.progress,
        seconds_left=node.seconds_left(job.now),  # the database's clock, which wrote the node's estimated end
    )


def _bars() -> Progress:
    """In a terminal: the bars, redrawn. Elsewhere (a log file) rich draws nothing until the end, and then a table
    fitted to 80 columns that cut node names (`infinite_t…`): the plain lines say it all there, so no table."""
    return Progress(
        TextColumn("{task.fields[node]:<14}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]:<10}"),
        NodeTimeColumn(),
        TimeLeftColumn(),
        TextColumn("{task.description}", markup=False),  # a message with "[/]" in it is text, not rich's markup
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )


def _say_interrupted(job_id: str, out: Path | None) -> None:
    try:
        err_console.print(
            f"job {job_id} interrupted; resume it with: {resume_command(job_id, out)}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    except OSError:  # SIGHUP: the terminal may be gone; the job is marked all the same
        pass


def deliver(runner, job, out: Path | None) -> None:
    """The finished job's video copied to --out (default spinbot-out/JOB_ID.mp4) and its path printed; a job that
    did not succeed is one error line."""
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
            f"{invoked_as()} run --resume {job.id} --out ANOTHER_FILE copies it",
            code=1,
        )
    typer.echo(str(out))
