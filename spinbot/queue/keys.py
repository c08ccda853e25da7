"""Every Redis key and id the queue uses, in one place. BullMQ keeps its own keys under BULL_PREFIX."""

from __future__ import annotations

from urllib.parse import quote

PREFIX = "spinbot"
BULL_PREFIX = f"{PREFIX}:bull"
WORKER_PREFIX = f"{PREFIX}:worker:"


def bull_job_id(job_id: str, node_id: str) -> str:
    """The queue's id for one node of one job: the idempotency key, so the queue refuses a second copy.

    BullMQ ids must not contain ':' (its key separator), hence the quoting.
    """
    return f"{quote(job_id, safe='')}.{quote(node_id, safe='')}"


def node_key(job_id: str, node_id: str, what: str) -> str:
    """Per node: 'result' (the final record), 'events' (a stream of progress), 'cancel' (a flag)."""
    return f"{PREFIX}:node:{job_id}:{node_id}:{what}"


def worker_key(worker_id: str) -> str:
    return f"{WORKER_PREFIX}{worker_id}"
