"""Structured logs: one JSON object per line, with any `extra=` fields kept as keys (services); plain lines for the
CLI's own jobs."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# uvicorn passes its message again with terminal colours as extra={"color_message": ...}: for its own formatter only
_DROPPED = {"color_message"}
# Terminal escape sequences (colours, cursor moves, titles) in any field: CSI, OSC, and the two-byte ones
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])?")


def _plain(value: Any) -> Any:
    return _ANSI.sub("", value) if isinstance(value, str) else value


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, with no terminal escape sequences in their strings."""
    return {k: _plain(v) for k, v in vars(record).items() if k not in _STANDARD and k not in _DROPPED}


class JsonFormatter(logging.Formatter):
    # Hand-written rather than python-json-logger: these few lines give our exact keys (ts, level, logger, msg, exc)
    # and share _STANDARD's extra-field rule with PlainFormatter, with no dependency to pin for 3.11-3.13.
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _plain(record.getMessage()),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = _plain(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """For a person at a terminal (the CLI's own jobs): "warning: MESSAGE (key: value; ...)" on one line."""

    def format(self, record: logging.LogRecord) -> str:
        extra = "; ".join(f"{k}: {v}" for k, v in _extras(record).items())
        line = f"{record.levelname.lower()}: {_plain(record.getMessage())}" + (f" ({extra})" if extra else "")
        return " ".join(line.split())  # one line, whatever a reason holds


class StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes, not as it was at setup: a program that runs the CLI in
    process and swaps stderr around it (a test runner, an embedding app) closed the stream a plain StreamHandler
    kept, and every later record was a "--- Logging error ---" traceback on the next stderr."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; sys.stderr is read at each record
        pass


def setup_logging(level: str = "INFO", *, plain: bool = False) -> None:
    """JSON lines (services: serve, worker), or plain lines (plain=True: the CLI running jobs itself)."""
    handler = StderrHandler()
    handler.setFormatter(PlainFormatter() if plain else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
