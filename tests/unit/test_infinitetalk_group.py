"""The native backend with its transformer over a group of ranks (gloo, CPU): the same video as one process.

The tiny models of tests/support/infinitetalk_models.py (2 heads, a 4 x 4 token grid a latent frame); rank 0 is
this test's process and runs the pipeline, rank 1 a process the group starts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import in_ci

if in_ci():
    import torch
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")

from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
from spinbot.backends.talk.infinitetalk.transformer_group import active_group, start_group, stop_group
from spinbot.tasks.talk import InfiniteTalkParams, prepare_image, prepare_speech
from spinbot.tasks.windows import plan_windows
from tests.support.infinitetalk_models import RUN, inputs, models_dir, native  # noqa: F401 (fixtures)
from tests.support.tasks import run_talk


@pytest.fixture
def two_ranks() -> Iterator[None]:
    start_group([torch.device("cpu")] * 2)
    try:
        yield
    finally:
        stop_group()


def generate(image: np.ndarray, speech, params: InfiniteTalkParams) -> tuple[np.ndarray, dict]:
    backend = NativeTalkBackend()
    state = backend.prepare(image, speech, params)
    windows = plan_windows(speech.frames, params.frame_window_size, params.motion_frame)
    assert len(windows) >= 2
    frames = [frame for window in windows[:2] for frame in backend.render_window(state, window)]
    return np.stack(frames), backend.describe(state)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The follower ranks compute with one thread; so must rank 0 and the single-process run for equal bits (a
    matmul's sums split over threads round differently: 0.015% of the values 1 level apart with 2 threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_ranks_render_the_same_frames_as_one_process(native, inputs, request, one_thread) -> None:  # noqa: F811
    params = InfiniteTalkParams(**RUN)
    speech, _, _ = prepare_speech(inputs[1], params)
    image, _ = prepare_image(inputs[0], NativeTalkBackend(), params)
    single, described = generate(image, speech, params)
    assert "ranks" not in described
    request.getfixturevalue("two_ranks")
    assert active_group() is not None
    parallel, described = generate(image, speech, params)
    assert parallel.shape == single.shape and parallel.shape[0] > RUN["frame_window_size"]  # two windows
    assert np.array_equal(parallel, single)
    assert described["ranks"] == 2 and described["gpus"] == 0
    assert described["self_attention"] == "ulysses(sdpa_attention, 2)"


def test_the_node_output_reports_the_group(native, inputs, tmp_path, one_thread, two_ranks) -> None:  # noqa: F811
    out, _ = run_talk(tmp_path, *inputs, **RUN)
    assert out.meta["ranks"] == 2 and out.meta["gpus"] == 0 and out.meta["sequence_parallel"] == "ulysses"


def test_an_idle_follower_stops_when_the_worker_is_gone(monkeypatch) -> None:
    """A follower waits on its queue between jobs; if the worker was killed (a daemon process outlives a SIGKILLed
    parent) it stops instead of waiting for ever, and while the worker lives it keeps waiting."""
    import os
    import queue as queues

    from spinbot.backends.talk.infinitetalk import transformer_group

    monkeypatch.setattr(transformer_group, "PARENT_CHECK_SECONDS", 0.01)
    assert transformer_group.next_call(queues.Queue(), parent=-1) == {"op": "stop"}  # not our parent: gone
    inbox: queues.Queue = queues.Queue()
    inbox.put({"op": "forward"})
    assert transformer_group.next_call(inbox, parent=os.getppid()) == {"op": "forward"}


def test_heads_that_do_not_divide_are_refused_before_the_followers_load() -> None:
    """3 ranks, a 2-head model: one clear error on rank 0, nothing sent, and the followers still answer (stop)."""
    from spinbot.backends.talk.infinitetalk.loading import Precision
    from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
    from spinbot.backends.talk.infinitetalk.transformer_group import LoadSpec

    model = InfiniteTalkModel(InfiniteTalkConfig(dim=32, num_heads=2, num_layers=1, ffn_dim=16, text_dim=8))
    spec = LoadSpec({}, Precision.for_device(torch.device("cpu")), 1.0)
    group = start_group([torch.device("cpu")] * 3)
    try:
        with pytest.raises(ValueError, match="2 attention heads to divide by the world size; 3 ranks do not"):
            group.transformer(model, spec)
        assert group.loaded is None
    finally:
        stop_group()
    assert all(process.exitcode == 0 for process in group.processes)


def test_a_dead_follower_is_named_instead_of_waited_for() -> None:
    group = start_group([torch.device("cpu")] * 2)
    try:
        group.processes[0].kill()
        group.processes[0].join(timeout=30)
        with pytest.raises(RuntimeError, match=r"rank 1 \(cpu\) exited with code -9; restart the worker"):
            group.send("forward")
    finally:
        stop_group()
