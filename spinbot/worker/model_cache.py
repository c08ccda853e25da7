"""Models stay loaded between jobs: a cache keyed by (model path, dtype) within a memory budget, LRU eviction.

Backends ask the worker's cache instead of loading directly:

    model = get_model_cache().get(path, "bf16", lambda: load_wan(path, torch.bfloat16))

A model larger than the whole budget is still returned and kept alone (the job needs it either way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]


@dataclass
class _Entry:
    value: Any
    size: int
    on_evict: Callable[[Any], None] | None


class ModelCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._loading: dict[CacheKey, threading.Lock] = {}
        self.hits = self.misses = self.evictions = 0

    @staticmethod
    def key(path: str | Path, dtype: Any) -> CacheKey:
        return str(Path(path).expanduser().resolve()), str(dtype)

    def get(
        self,
        path: str | Path,
        dtype: Any,
        load: Callable[[], Any],
        size: int | None = None,
        on_evict: Callable[[Any], None] | None = None,
    ) -> Any:
        """The cached model, or load() it, measure it (or take `size`), make room and keep it."""
        key = self.key(path, dtype)
        with self._key_lock(key):  # two threads asking for one model load it once
            value = self._lookup(key)
            if value is not None:
                return value
            started = time.perf_counter()
            value = load()
            entry = _Entry(value, size if size is not None else estimate_bytes(value), on_evict)
            # One line per load: what a job paid for a model the cache did not hold (benchmarks read it back).
            log.info(
                "model loaded",
                extra={
                    "model": key[0],
                    "dtype": key[1],
                    "bytes": entry.size,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            self._insert(key, entry)
            return value

    def evict(self, path: str | Path, dtype: Any) -> bool:
        with self._lock:
            entry = self._entries.pop(self.key(path, dtype), None)
        if entry is not None:
            self._release(entry)
        return entry is not None

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            self._release(entry)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._entries)

    def _key_lock(self, key: CacheKey) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(key, threading.Lock())

    def _lookup(self, key: CacheKey) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def _insert(self, key: CacheKey, entry: _Entry) -> None:
        with self._lock:
            evicted = self._make_room(entry.size)
            self._entries[key] = entry
        for old in evicted:
            self._release(old)

    def _make_room(self, size: int) -> list[_Entry]:
        evicted = []
        used = sum(e.size for e in self._entries.values())
        while self._entries and used + size > self.budget:
            old_key, old = self._entries.popitem(last=False)
            used -= old.size
            evicted.append(old)
            self.evictions += 1
            log.info("model evicted", extra={"model": old_key[0], "dtype": old_key[1], "bytes": old.size})
        return evicted

    @staticmethod
    def _release(entry: _Entry) -> None:
        if entry.on_evict is not None:
            entry.on_evict(entry.value)  # e.g. move to CPU, then torch.cuda.empty_cache()


def estimate_bytes(value: Any) -> int:
    """Bytes held by a model: a torch module's parameters and buffers, an array's nbytes, or a dict of those."""
    if hasattr(value, "parameters") and hasattr(value, "buffers"):
        tensors = list(value.parameters()) + list(value.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(estimate_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate_bytes(v) for v in value)
    return 0


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def get_model_cache() -> ModelCache:
    """The process's cache; its budget is SPINBOT_MODEL_CACHE_BYTES."""
    global _cache
    with _cache_lock:
        if _cache is None:
            from spinbot.settings import get_settings

            _cache = ModelCache(get_settings().model_cache_bytes)
        return _cache
