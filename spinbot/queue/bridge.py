"""Call BullMQ's asyncio API from synchronous code: one event loop on a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class LoopThread:
    def __init__(self, name: str = "spinbot-queue-loop"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, make: Callable[[], Awaitable[Any]], timeout: float) -> Any:
        """Run make() on the loop; asyncio.TimeoutError after `timeout` seconds (the coroutine is cancelled)."""

        async def bounded():
            return await asyncio.wait_for(make(), timeout)

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()
