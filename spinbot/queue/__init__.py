"""The Redis job queue (BullMQ) behind a thin adapter: QueueDispatcher for the control plane, records for workers."""

from spinbot.queue.config import DEFAULT_ROUTES, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL, QueueOptions
from spinbot.queue.dispatcher import QueueDispatcher
from spinbot.queue.errors import QueueJobLost, QueueUnavailable, WorkerTaskError

__all__ = [
    "DEFAULT_ROUTES",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "QueueDispatcher",
    "QueueJobLost",
    "QueueOptions",
    "QueueUnavailable",
    "WorkerTaskError",
]
