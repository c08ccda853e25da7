"""A running node's time left, estimated where its progress is published (spinbot.control.progress) and sent with it:
in its events (`seconds_left`), on its row (`estimated_end_at`, so `GET /v1/jobs/{id}` and `spinbot jobs watch` have
it), so that `spinbot run`, the API's clients and the web page show one number, made by one rule (TimeLeft). A job's
time left is the sum of its unfinished nodes' only once every one of them has a measured rate: nothing is guessed.

The rate is measured on the publisher's monotonic clock; the end date on the row is the database's time at the write
plus the time left (spinbot.state.lease.database_now: PostgreSQL's clock, which every process shares, as for every
time the job store writes; SQLite's one machine's), and a reader counts it down from the database's time at its read
(JobView.read_at), so neither the writer's nor the reader's clock error reaches the number shown."""

from __future__ import annotations

from collections.abc import Iterable

SUCCEEDED = "succeeded"
MAX_SECONDS = 30 * 24 * 3600.0  # an estimate past 30 days is no estimate


class TimeLeft:
    """A running node's time left from its own progress rate, measured from the end of the slowest interval between
    two of its reports so far (the least progress a second): the set-up. A talking head reports "speech and portrait
    ready", loads its models for minutes, then reports its first step; measured from its first report, the estimate
    began at ~2 hours for a render of minutes. Nothing until a report after that one has measured some progress."""

    def __init__(self) -> None:
        self.since: tuple[float, float] | None = None  # (time.monotonic(), progress) the rate is measured from
        self.last: tuple[float, float] | None = None
        self.slowest: tuple[float, float] | None = None  # (seconds, progress) of the slowest interval so far

    def report(self, progress: float, now: float) -> None:
        if self.last is not None:
            interval = (now - self.last[0], progress - self.last[1])
            if self.slowest is None or _slower(interval, self.slowest):
                self.slowest, self.since = interval, (now, progress)
        self.since = self.since or (now, progress)
        self.last = (now, progress)

    def seconds(self, now: float) -> float | None:
        if self.since is None or self.last is None:
            return None
        (t0, p0), (t1, p1) = self.since, self.last
        if p1 <= p0 or t1 <= t0:
            return None
        left_at_last = (1.0 - p1) * (t1 - t0) / (p1 - p0)
        if left_at_last > MAX_SECONDS:  # progress by float noise: no estimate (and no end date past datetime's range)
            return None
        return max(0.0, left_at_last - (now - t1))  # counts down between reports


SAME_RATE = 1e-6  # rates this close are one: 0.3 - 0.2 is 0.09999999999999998, and that interval is not slower


def _slower(interval: tuple[float, float], than: tuple[float, float]) -> bool:
    """Whether the (seconds, progress) `interval` made less progress a second than `than`."""
    return interval[1] * than[0] < than[1] * interval[0] * (1 - SAME_RATE)


class Countdown:
    """An estimate made elsewhere (an event's `seconds_left`, a row's), counted down from when it was received."""

    def __init__(self, seconds: float | None, at: float) -> None:
        self.left, self.at = seconds, at

    def seconds(self, now: float) -> float | None:
        return None if self.left is None else max(0.0, self.left - (now - self.at))


def job_seconds_left(nodes: Iterable[tuple[str, float | None]]) -> float | None:
    """The job's time left from its nodes' (status, seconds left): the sum over the nodes not succeeded, or None
    while one of them has no estimate (a pending node has none: no rate measured yet)."""
    left = [seconds for status, seconds in nodes if status != SUCCEEDED]
    if not left or any(seconds is None for seconds in left):
        return None
    return round(sum(seconds for seconds in left if seconds is not None), 1)
