"""setup_logging's handler writes to sys.stderr as it is at each record (the CLI run in process, stderr swapped)."""

from __future__ import annotations

import io
import logging
import sys

from spinbot.logs import setup_logging


def test_records_go_to_the_stderr_of_the_moment_not_a_closed_one(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("WARNING", plain=True)
    first.close()  # as a test runner closes the stream it captured a command's stderr in
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("spinbot.test").warning("disk nearly full")
    assert second.getvalue() == "warning: disk nearly full\n"  # not "--- Logging error ---" and a traceback
