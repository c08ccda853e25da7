"""The background threads of the upscale pipeline: work on a source's items computed ahead in a thread.

Standard-library threads and bounded queues: decoding, device work and encoding overlap, and memory stays bounded by
the queue depth, not the video's length. Errors cross to the consumer; closing the consumer stops the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from queue import Empty, Full, Queue
from typing import Any, TypeVar

T = TypeVar("T")


class _End:
    def __init__(self, error: BaseException | None = None):
        self.error = error


def prefetch(source: Iterator[Any], depth: int, work: Callable[[Any], T], group: int = 0) -> Iterator[T]:
    """work(item) for each item of `source` (or each list of `group` items), computed in a background thread
    that runs at most `depth` results ahead. An error in the thread is raised here; closing this iterator stops
    the thread and closes `source`."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in _grouped(source, group) if group else source:
                if not offer(work(item)):
                    return
            offer(_End())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_End(err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="upscale-pipeline", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = queue.get(timeout=0.05)
            except Empty:
                if not thread.is_alive() and queue.empty():
                    raise RuntimeError("upscale pipeline thread ended without a result") from None
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _grouped(items: Iterator[T], size: int) -> Iterator[list[T]]:
    group: list[T] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
