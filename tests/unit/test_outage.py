"""Riding out a Redis outage: retried with a growing wait, given up with one clear line, and only for Redis."""

from __future__ import annotations

import itertools
import time

import pytest
import redis

from spinbot.queue.errors import QueueUnavailable
from spinbot.queue.outage import ride_out_outage

URL = "redis://user:secret@cache.example:6379/0"


def failing(times: int, error: BaseException):
    calls: list[float] = []

    def step() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return "done"

    return step, calls


def test_a_short_outage_is_ridden_out_with_a_doubling_wait():
    step, calls = failing(3, redis.ConnectionError("refused"))
    assert ride_out_outage(step, 5.0, URL, "testing") == "done"
    waits = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 4
    assert waits[0] == pytest.approx(0.1, abs=0.05) and waits[1] == pytest.approx(0.2, abs=0.05)
    assert waits[2] == pytest.approx(0.4, abs=0.05)


def test_a_long_outage_is_one_line_naming_redis_without_its_password():
    step, _ = failing(1000, redis.TimeoutError("timed out"))
    started = time.monotonic()
    with pytest.raises(QueueUnavailable) as err:
        ride_out_outage(step, 1.0, URL, "storing a node result")
    assert 1.0 <= time.monotonic() - started < 1.5
    message = str(err.value)
    assert message == (
        "Redis at redis://***@cache.example:6379/0 unreachable for 1 s while storing a node result: "
        "TimeoutError: timed out"
    )
    assert isinstance(err.value.__cause__, redis.TimeoutError)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ValueError("bad data")])
def test_other_errors_are_not_an_outage(error):
    step, calls = failing(1, error)
    with pytest.raises(type(error)):
        ride_out_outage(step, 5.0, URL, "testing")
    assert len(calls) == 1
