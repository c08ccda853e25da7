"""The queue's errors: each str() is the one line the control plane records."""

from spinbot.errors import SpinBotError


class QueueUnavailable(SpinBotError):
    """Redis could not be reached for longer than the retry window."""


class WorkerTaskError(SpinBotError):
    """The task ran on a worker and failed there; the message is the worker's one-line error."""


class QueueJobLost(SpinBotError):
    """The queue lost the job (Redis restarted without its data) more often than the dispatcher re-adds it."""
