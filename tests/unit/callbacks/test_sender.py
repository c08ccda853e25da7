"""The CallbackSender's threads: one key's calls hold at most its share of them."""

from __future__ import annotations

import threading
import time

from spinbot.control.callbacks import PER_OWNER_ATTEMPTS, CallbackSender
from spinbot.control.runner import Runner
from spinbot.settings import get_settings
from tests.support.callback_api import QuickDispatcher


def test_one_keys_slow_calls_hold_at_most_its_share_of_the_sender_threads(spinbot_env, monkeypatch):
    """A key whose receivers hang (or that ends many jobs at once) had every sender thread: other keys' calls waited
    behind it for as long as its attempts lasted. Now it runs PER_OWNER_ATTEMPTS at once and parks the rest."""
    sender = CallbackSender(Runner(dispatcher=QuickDispatcher()).jobs, get_settings(), lambda job: {})
    owners = {"slow-1": "slow", "slow-2": "slow", "slow-3": "slow", "other": "other"}
    release, started, done = threading.Event(), [], []

    def attempt(job_id: str) -> None:
        started.append(job_id)
        if owners[job_id] == "slow":
            release.wait(20)
        done.append(job_id)

    monkeypatch.setattr(sender, "attempt", attempt)
    monkeypatch.setattr(sender, "_owner", owners.__getitem__)
    try:
        for job_id in owners:
            sender.schedule(job_id)
        sender.schedule("other")  # a sweep that finds it due again while it is queued: not a second attempt
        deadline = time.monotonic() + 10
        while "other" not in done:
            assert time.monotonic() < deadline, f"the other key's call waited: {started}"
            time.sleep(0.02)
        time.sleep(0.3)  # room for a third slow attempt to start, were it allowed
        slow_running = [job_id for job_id in started if owners[job_id] == "slow"]  # whichever thread came first
        assert PER_OWNER_ATTEMPTS == 2 and len(slow_running) == 2 and "other" in started and len(started) == 3
        release.set()
        while len(done) < 4:
            assert time.monotonic() < deadline + 10, f"a parked call was never sent: {done}"
            time.sleep(0.02)
        assert started[-1] not in slow_running and sorted(done) == sorted(owners)  # the parked one, once released
    finally:
        release.set()
        sender.close()
