"""Errors that carry one clear line for the user (CLI exit message, API 4xx body)."""

MAX_ECHOED_CHARS = 80  # a refused value is quoted back this far: a one-line error stays one readable line


def shorten(text: str) -> str:
    """Text the user gave, for an error line: cut at MAX_ECHOED_CHARS with its length said (an unknown name of a
    megabyte must not come back whole)."""
    return text if len(text) <= MAX_ECHOED_CHARS else f"{text[:MAX_ECHOED_CHARS]}... ({len(text):,} characters)"


def echo(value: object) -> str:
    """A value the user gave, quoted (its repr) and shortened."""
    return shorten(repr(value))


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none: compiler, cuDNN and parser
    errors are many lines, and a message of one line has to stay one line."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class SpinBotError(Exception):
    """Base class: str(err) is the one line shown to the user."""


class InputError(SpinBotError):
    """Bad user input: a missing file, a file of the wrong kind, an unknown param."""


class SettingsError(SpinBotError):
    """A SPINBOT_* environment variable with a value the settings refuse."""


class PipelineError(SpinBotError):
    """A pipelines.json that cannot be used."""


class ParamsError(InputError):
    """A node param that is unknown or ill-typed."""


class StorageKeyError(InputError):
    """An artifact key that would leave the store root."""


class BackendUnavailable(SpinBotError):
    """A backend that is not implemented or whose files/packages are missing."""


class TaskFailed(SpinBotError):
    """A task that ran and failed; the message names the node."""


class JobNotFound(SpinBotError):
    pass


class NoData(SpinBotError):
    """A command that only reads (or acts on) existing jobs, where no database exists yet: nothing is created."""


class InputOutOfLimits(InputError):
    """An input outside one of its limits; the message names the limit, and an upload's answer passes it on."""


class InputTooLarge(InputOutOfLimits):
    """An input over one of its limits (bytes, pixels, seconds, a portrait's aspect); the message names the limit."""


class InputTooSmall(InputOutOfLimits):
    """An input under one of its limits (a portrait's short side); the message names the limit."""


class UnusableFile(InputError):
    """A file recognised as something that cannot be used (an iPhone's HEIC photo, a video without sound as the
    voice). `reason` says what it is and what to send instead, naming no path: an upload's answer gives it."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


class TooManyJobs(SpinBotError):
    """A key with as many jobs waiting or running as it may have (SPINBOT_MAX_ACTIVE_JOBS)."""

    @classmethod
    def at_limit(cls, active: int, limit: int) -> "TooManyJobs":
        return cls(
            f"this key has {active} jobs waiting or running, the limit (SPINBOT_MAX_ACTIVE_JOBS={limit}); "
            "wait for one to finish, or cancel one"
        )


class Conflict(SpinBotError):
    """A request that the job's current state forbids (retrying a job that is not failed, deleting a running one)."""
