"""A job's overall progress from its nodes' progress.

The plain average of the nodes (a succeeded node counts 1, a pending one 0), the same figure the web page's overall bar
shows (spinbot/api/web/progress.js), so the API, the CLI and the page agree. Two rules make it a number one can wait
on: it never goes back (the job's row keeps the highest value recorded; a node that starts again after a takeover or
a retry starts from 0, but the job's figure holds until the node passes where it was), and it is 1.0 only once the
job succeeded (a job whose last node just finished is not delivered until its row says so).
"""

from __future__ import annotations

from collections.abc import Iterable

SUCCEEDED = "succeeded"
UNFINISHED_CEILING = 0.999  # the most a job that has not succeeded shows


def node_share(status: str, progress: float) -> float:
    """What one node adds to its job's progress, between 0 and 1."""
    return 1.0 if status == SUCCEEDED else min(max(progress, 0.0), 1.0)


def average(shares: Iterable[float]) -> float:
    values = list(shares)
    return sum(values) / len(values) if values else 0.0


def job_progress(job_status: str, shares: Iterable[float], recorded: float = 0.0) -> float:
    """The job's progress: the nodes' average, never below what was recorded for it, 1.0 only when it succeeded."""
    if job_status == SUCCEEDED:
        return 1.0
    return round(min(max(average(shares), recorded), UNFINISHED_CEILING), 4)
