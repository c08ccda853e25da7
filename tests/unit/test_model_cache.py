import threading
import time

import numpy as np

from spinbot.worker.model_cache import ModelCache, estimate_bytes


def loader(calls: list, value):
    def load():
        calls.append(value)
        return value

    return load


def test_second_get_returns_the_loaded_model_without_loading_again():
    cache, calls = ModelCache(budget_bytes=100), []
    first = cache.get("/models/a.safetensors", "bf16", loader(calls, object()), size=10)
    again = cache.get("/models/a.safetensors", "bf16", loader(calls, object()), size=10)
    assert again is first and len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)


def test_dtype_is_part_of_the_key():
    cache, calls = ModelCache(budget_bytes=100), []
    cache.get("/models/a", "bf16", loader(calls, "a-bf16"), size=10)
    assert cache.get("/models/a", "fp8", loader(calls, "a-fp8"), size=10) == "a-fp8"
    assert calls == ["a-bf16", "a-fp8"]


def test_least_recently_used_model_is_evicted_to_stay_within_budget():
    cache, released = ModelCache(budget_bytes=100), []
    for name in ("a", "b"):
        cache.get(f"/m/{name}", "bf16", lambda name=name: name, size=40, on_evict=released.append)
    cache.get("/m/a", "bf16", lambda: "reloaded")  # a is now the most recently used
    cache.get("/m/c", "bf16", lambda: "c", size=40, on_evict=released.append)
    assert released == ["b"]
    assert [k[0] for k in cache.keys()] == ["/m/a", "/m/c"] and cache.used_bytes == 80


def test_a_model_larger_than_the_budget_is_kept_alone():
    cache = ModelCache(budget_bytes=100)
    cache.get("/m/small", "bf16", lambda: "small", size=30)
    assert cache.get("/m/huge", "bf16", lambda: "huge", size=500) == "huge"
    assert [k[0] for k in cache.keys()] == ["/m/huge"] and cache.evictions == 1


def test_size_is_measured_when_not_given():
    cache = ModelCache(budget_bytes=10_000)
    cache.get("/m/weights", "float32", lambda: {"w": np.zeros((10, 10), np.float32), "b": np.zeros(10, np.float32)})
    assert cache.used_bytes == 440 == estimate_bytes({"w": np.zeros((10, 10), np.float32), "b": np.zeros(10, "f4")})


def test_two_threads_asking_for_one_model_load_it_once():
    cache, calls = ModelCache(budget_bytes=100), []

    def slow_load():
        calls.append(1)
        time.sleep(0.1)
        return "model"

    threads = [threading.Thread(target=cache.get, args=("/m/a", "bf16", slow_load, 1)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]


def test_evict_and_clear_release_models():
    cache, released = ModelCache(budget_bytes=100), []
    cache.get("/m/a", "bf16", lambda: "a", size=1, on_evict=released.append)
    cache.get("/m/b", "bf16", lambda: "b", size=1, on_evict=released.append)
    assert cache.evict("/m/a", "bf16") and not cache.evict("/m/a", "bf16")
    cache.clear()
    assert released == ["a", "b"] and cache.keys() == []
