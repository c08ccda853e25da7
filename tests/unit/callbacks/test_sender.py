"""The CallbackSender's threads: one key's calls hold at most its share of them, a parked call is queued once, and
an attempt the database stops is left for a later sweep."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from spinbot.control.callbacks import PER_OWNER_ATTEMPTS, CallbackSender
from spinbot.control.runner import Runner
from spinbot.settings import get_settings
from tests.support.quick_dispatcher import QuickDispatcher

OWNERS = {"slow-1": "slow", "slow-2": "slow", "slow-3": "slow", "other": "other"}


class Attempts:
    """Stand-in attempts: a slow key's hold until released; each start, end and parked call is told as it happens
    (the test never waits on the sender's own condition: it would take the timer thread's wake-ups)."""

    def __init__(self, sender: CallbackSender) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.done: list[str] = []
        self.parked: list[str] = []
        self.changed = threading.Condition()
        self._start = sender._start

    def start(self, owner: str, job_id: str) -> bool:
        runs = self._start(owner, job_id)
        if not runs:
            with self.changed:
                self.parked.append(job_id)
                self.changed.notify_all()
        return runs

    def __call__(self, job_id: str) -> None:
        with self.changed:
            self.started.append(job_id)
            self.changed.notify_all()
        if OWNERS[job_id] == "slow":
            self.release.wait(30)
        with self.changed:
            self.done.append(job_id)
            self.changed.notify_all()

    def wait_for(self, check, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(check, 20), f"{what}: started {self.started}, done {self.done}"


@pytest.fixture
def sender(spinbot_env) -> Iterator[CallbackSender]:
    sender = CallbackSender(Runner(dispatcher=QuickDispatcher()).jobs, get_settings(), lambda job: {})
    try:
        yield sender
    finally:
        sender.close()


@pytest.fixture
def attempts(sender, monkeypatch) -> Iterator[Attempts]:
    attempts = Attempts(sender)
    monkeypatch.setattr(sender, "attempt", attempts)
    monkeypatch.setattr(sender, "_start", attempts.start)
    monkeypatch.setattr(sender, "_owner", OWNERS.__getitem__)
    try:
        yield attempts
    finally:
        attempts.release.set()


def test_one_keys_slow_calls_hold_at_most_its_share_of_the_sender_threads(sender, attempts):
    """A key whose receivers hang (or that ends many jobs at once) had every sender thread: other keys' calls waited
    behind it for as long as its attempts lasted. Now it runs PER_OWNER_ATTEMPTS at once and parks the rest."""
    assert PER_OWNER_ATTEMPTS == 2
    for job_id in OWNERS:
        sender.schedule(job_id)
    sender.schedule("other")  # a sweep that finds it due again while it is queued: not a second attempt
    attempts.wait_for(lambda: "other" in attempts.done, "the other key's call waited")
    attempts.wait_for(lambda: len(attempts.started) == 3 and attempts.parked, "two slow calls start, one is parked")
    slow_running = [job_id for job_id in attempts.started if OWNERS[job_id] == "slow"]
    assert len(slow_running) == 2 and attempts.started.count("other") == 1
    attempts.release.set()
    attempts.wait_for(lambda: len(attempts.done) == 4, "a parked call was never sent")
    assert attempts.started[-1] not in slow_running and sorted(attempts.done) == sorted(OWNERS)


def test_a_parked_call_found_due_again_by_a_sweep_is_not_queued_twice(sender, attempts):
    for job_id in ("slow-1", "slow-2", "slow-3"):
        sender.schedule(job_id)
    attempts.wait_for(lambda: attempts.parked, "a third call of one key is parked")
    (waiting,) = attempts.parked
    sender.schedule(waiting)  # the sweep: it is still due in the database
    with sender._wake:
        assert waiting in sender._queued and not sender._heap  # not on the heap again
    attempts.release.set()
    attempts.wait_for(lambda: len(attempts.done) == 3, "the parked call was never sent")
    assert sorted(attempts.started) == ["slow-1", "slow-2", "slow-3"] and attempts.parked == [waiting]


def test_an_attempt_the_database_stops_is_one_line_and_left_for_the_next_sweep(sender, monkeypatch, caplog):
    """The database away while the job is read: one warning, no traceback, and the call queued again by a sweep."""
    down = OperationalError("SELECT", {}, Exception("connection refused\nDETAIL: more"))
    calls, forgotten, forget = threading.Semaphore(0), threading.Event(), sender._forget

    def job(job_id: str):
        calls.release()
        raise down

    def forget_told(job_id: str) -> None:
        forget(job_id)
        forgotten.set()

    monkeypatch.setattr(sender, "_job", job)
    monkeypatch.setattr(sender, "_forget", forget_told)
    caplog.set_level(logging.WARNING, logger="spinbot.control.callbacks")
    sender.schedule("job-1")
    assert calls.acquire(timeout=20)
    assert forgotten.wait(20)
    sender.schedule("job-1")  # the next sweep
    assert calls.acquire(timeout=20)
    # the attempt's thread forgets the call before its warning is written: on a loaded machine the line comes later
    deadline = time.monotonic() + 20
    while not (stopped := [r for r in caplog.records if r.getMessage() == "callback attempt stopped"]):
        assert time.monotonic() < deadline, "no 'callback attempt stopped' line"
        time.sleep(0.01)
    record = stopped[0]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "\n" not in record.error  # type: ignore[attr-defined]
