"""A dispatcher whose python nodes take no time, for API tests about what happens around a job (webhooks,
idempotency keys) rather than inside it."""

from __future__ import annotations

import threading
import time

from spinbot.control.dispatch import Dispatcher
from spinbot.errors import TaskFailed
from spinbot.tasks.base import Cancelled, NodeOutput


class QuickDispatcher(Dispatcher):
    """Python nodes return at once; `fail` fails infinite_talk with one line, `hold` keeps it running until the job
    is cancelled (`holding` is set once it runs)."""

    def __init__(self, *, fail: bool = False, hold: bool = False):  # by name: `QuickDispatcher(hold)` set fail
        self.fail, self.hold, self.holding = fail, hold, threading.Event()

    def run(self, request, report, is_cancelled):
        if self.fail and request.node_id == "infinite_talk":
            raise TaskFailed("the render broke")
        while self.hold and request.node_id == "infinite_talk":
            self.holding.set()
            if is_cancelled():
                raise Cancelled("cancelled by its user")
            time.sleep(0.02)
        return NodeOutput(values={"audio_duration": 1.0})
