"""Riding out a Redis outage: retried with a growing wait, given up with one clear line, and only for Redis."""

from __future__ import annotations

import pytest
import redis

from spinbot.queue.errors import QueueUnavailable
from spinbot.queue.outage import ride_out_outage

URL = "redis://user:secret@cache.example:6379/0"


class FakeTime:
    """A clock that only the waits move (and a step that takes its time): the waits are checked, not measured."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def failing(times: int, error: BaseException, clock: FakeTime | None = None, step_seconds: float = 0.0):
    calls: list[float] = []

    def step() -> str:
        calls.append(clock.now if clock else 0.0)
        if clock:
            clock.now += step_seconds
        if len(calls) <= times:
            raise error
        return "done"

    return step, calls


def test_a_short_outage_is_ridden_out_with_a_doubling_wait():
    fake = FakeTime()
    step, calls = failing(3, redis.ConnectionError("refused"))
    assert ride_out_outage(step, 5.0, URL, "testing", sleep=fake.sleep, clock=fake.clock) == "done"
    assert len(calls) == 4
    assert fake.waits == pytest.approx([0.1, 0.2, 0.4])


def test_the_wait_doubles_up_to_two_seconds():
    fake = FakeTime()
    step, _ = failing(7, redis.ConnectionError("refused"))
    assert ride_out_outage(step, 60.0, URL, "testing", sleep=fake.sleep, clock=fake.clock) == "done"
    assert fake.waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_a_long_outage_is_one_line_naming_redis_without_its_password():
    fake = FakeTime()
    step, calls = failing(1000, redis.TimeoutError("timed out"))
    with pytest.raises(QueueUnavailable) as err:
        ride_out_outage(step, 1.0, URL, "storing a node result", sleep=fake.sleep, clock=fake.clock)
    assert fake.waits == pytest.approx([0.1, 0.2, 0.4, 0.3])  # the last wait cut short: one more try at the limit
    assert len(calls) == 5
    message = str(err.value)
    assert message == (
        "Redis at redis://***@cache.example:6379/0 unreachable for 1 s while storing a node result: "
        "TimeoutError: timed out"
    )
    assert isinstance(err.value.__cause__, redis.TimeoutError)


def test_the_time_a_failing_step_takes_counts_toward_the_limit():
    fake = FakeTime()
    step, calls = failing(1000, redis.TimeoutError("timed out"), clock=fake, step_seconds=0.4)
    with pytest.raises(QueueUnavailable, match="unreachable for 2 s"):
        ride_out_outage(step, 2.0, URL, "polling", sleep=fake.sleep, clock=fake.clock)
    # 0.4 s a try; waits of 0.1, 0.2, then 0.4: the limit is passed during the fourth try, which is the last
    assert calls == pytest.approx([0.0, 0.5, 1.1, 1.9])
    assert fake.waits == pytest.approx([0.1, 0.2, 0.4])


def test_the_real_sleep_is_the_default():
    step, calls = failing(1, redis.ConnectionError("refused"))
    assert ride_out_outage(step, 5.0, URL, "testing") == "done"  # one real wait of 0.1 s, not measured
    assert len(calls) == 2


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ValueError("bad data")])
def test_other_errors_are_not_an_outage(error):
    step, calls = failing(1, error)
    with pytest.raises(type(error)):
        ride_out_outage(step, 5.0, URL, "testing")
    assert len(calls) == 1
