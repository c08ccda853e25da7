"""A job's overall progress from its nodes' progress.

Each node's progress (a succeeded node counts 1, a pending one 0) weighted by its task's share of the work
(spinbot.tasks.catalog.TASK_WEIGHTS: the talking head about 80%, the upscale 15%, the speech 4%, the script 1%), so
the figure moves as the time goes: a plain average showed 54% when the talking head had just started. The API
(`progress`, `job_progress` of the events), the CLI's job bar and the web page's overall bar all show this figure.
Two rules make it a number one can wait on: it never goes back (the job's row keeps the highest value recorded; a
node that starts again after a takeover or a retry starts from 0, but the job's figure holds until the node passes
where it was), and it is 1.0 only once the job succeeded (a job whose last node just finished is not delivered until
its row says so).
"""

from __future__ import annotations

from collections.abc import Iterable

from spinbot.tasks.catalog import task_weight

SUCCEEDED = "succeeded"
UNFINISHED_CEILING = 0.999  # the most a job that has not succeeded shows

Part = tuple[float, float]  # a node's (weight, share) of its job's progress


def node_share(status: str, progress: float) -> float:
    """What one node has done of its own work, between 0 and 1."""
    return 1.0 if status == SUCCEEDED else min(max(progress, 0.0), 1.0)


def node_part(task: str, status: str, progress: float) -> Part:
    """One node's (weight, share): its task's weight and how much of its work is done."""
    return task_weight(task), node_share(status, progress)


def weighted_average(parts: Iterable[Part]) -> float:
    values = list(parts)
    total = sum(weight for weight, _ in values)
    return sum(weight * share for weight, share in values) / total if total > 0 else 0.0


def job_progress(job_status: str, parts: Iterable[Part], recorded: float = 0.0) -> float:
    """The job's progress: its nodes' weighted average, never below what was recorded for it, 1.0 only when it
    succeeded."""
    if job_status == SUCCEEDED:
        return 1.0
    return round(min(max(weighted_average(parts), recorded), UNFINISHED_CEILING), 4)
