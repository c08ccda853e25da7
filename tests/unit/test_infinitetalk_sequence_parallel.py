"""Sequence parallelism of the InfiniteTalk transformer on the CPU: gloo ranks started by the test.

The reference is the official forward pass (shared/reference/infinitetalk/forward-small.safetensors: 4 heads, a
3 x 4 x 6 token grid, 24 tokens a latent frame). With 2 ranks (36 tokens each) and 4 ranks (18 each) the slices
start and end inside latent frames, so the audio cross-attention's frame runs are exercised; a cropped latent
(3 x 3 x 5 = 45 tokens) pads the last ranks' slices.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import in_ci

if in_ci():
    import torch
else:
    torch = pytest.importorskip("torch")

from spinbot.backends.talk.infinitetalk.sequence_parallel import Shard, check_heads, frame_runs
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import load_model
from tests.support.sequence_parallel import cropped, load_reference, run_parallel_forward
from tests.unit.test_infinitetalk_model import reference_path

BENCHMARK = "benchmarks/infinitetalk_multigpu.py"
BOUND = 1e-5  # relative L2 error, float32; the split changes only the order of a few sums


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def path() -> Path:
    return reference_path()


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_forward_equals_official(path: Path, tmp_path: Path, world: int) -> None:
    ref = load_reference(path)
    i = ref["inputs"]
    model = load_model([path], ref["config"], dtype=torch.float32, prefix="weights.")
    with torch.no_grad():
        single = model(i["x"][None], i["t"], i["context"][None], i["clip_fea"], i["y"][None], i["audio"])
    out = run_parallel_forward(path, tmp_path / "out.pt", world)
    assert out.shape == ref["out"].shape
    print(f"world {world}: relative error {relative(out, single):.2e} to one process")
    assert relative(out, single) < BOUND
    assert relative(out, ref["out"]) < BOUND  # and to the official forward itself


def test_padding_does_not_change_the_result(path: Path, tmp_path: Path) -> None:
    """45 tokens over 4 ranks: 12, 12, 12 and 9 real tokens (3 of padding); 15 tokens a frame."""
    ref = load_reference(path)
    i = cropped(ref["inputs"], 6, 10)
    model = load_model([path], ref["config"], dtype=torch.float32, prefix="weights.")
    with torch.no_grad():
        single = model(i["x"][None], i["t"], i["context"][None], i["clip_fea"], i["y"][None], i["audio"])
    assert single.shape[2:] == (3, 6, 10)
    out = run_parallel_forward(path, tmp_path / "out.pt", 4, crop=(6, 10))
    assert relative(out, single) < BOUND


def test_compiled_blocks_trace_the_exchange_as_one_graph(path: Path, tmp_path: Path) -> None:
    """torch.compile(fullgraph=True) of every block with the all-to-alls and the frame runs inside: no graph break,
    and the same prediction."""
    ref = load_reference(path)
    out = run_parallel_forward(path, tmp_path / "out.pt", 2, traced=True)
    assert relative(out, ref["out"]) < BOUND


def test_release_gives_the_model_its_own_kernels_back(path: Path) -> None:
    """A world of one (gloo, this process): SequenceParallel installs its kernels, equals the model, and release()
    restores the model's attention and the class's audio forward."""
    import torch.distributed as dist

    from spinbot.backends.talk.infinitetalk.model import AudioCrossAttention, attention
    from spinbot.backends.talk.infinitetalk.rank_group import free_port, init_rank
    from spinbot.backends.talk.infinitetalk.sequence_parallel import (
        FrameRunAudioCrossAttention,
        SequenceParallel,
        UlyssesAttention,
    )

    ref = load_reference(path)
    i = ref["inputs"]
    model = load_model([path], ref["config"], dtype=torch.float32, prefix="weights.")
    keys = list(model.state_dict())
    init_rank(0, 1, free_port(), torch.device("cpu"))
    try:
        parallel = SequenceParallel(model)
        block = model.typed_blocks()[0]
        assert type(block.audio_cross_attn) is FrameRunAudioCrossAttention
        assert list(model.state_dict()) == keys, "the key names stay the official ones"
        with torch.no_grad():
            grid = model.token_grid(i["x"][None].shape)
            conditions = parallel.conditions(i["context"][None], i["clip_fea"], i["audio"], grid)
            out = parallel(i["x"][None], i["t"], i["y"][None], conditions)
        assert isinstance(block.self_attn.attend, UlyssesAttention)
        assert relative(out, ref["out"]) < BOUND
        parallel.release()
        assert block.self_attn.attend is attention
        assert type(block.audio_cross_attn) is AudioCrossAttention and "runs" not in vars(block.audio_cross_attn)
    finally:
        dist.destroy_process_group()


def test_compiled_blocks_share_one_graph_under_sequence_parallel() -> None:
    """Ten compiled blocks under SequenceParallel (a world of one) make one graph, as they do without it. Regression:
    a callable object installed as each block's audio forward made dynamo compile every block anew; past its cache
    limit of 8 the rest ran eagerly (10% slower a step on the H200, benchmarks/results/infinitetalk_one_rank.json)."""
    import torch.distributed as dist
    from torch._dynamo.utils import counters

    from spinbot.backends.talk.infinitetalk.model import (
        CLIP_DIM,
        WAV2VEC_DIM,
        WAV2VEC_LAYERS,
        InfiniteTalkConfig,
        InfiniteTalkModel,
    )
    from spinbot.backends.talk.infinitetalk.rank_group import free_port, init_rank
    from spinbot.backends.talk.infinitetalk.sequence_parallel import SequenceParallel

    torch.manual_seed(0)
    cfg = InfiniteTalkConfig(dim=64, num_heads=4, ffn_dim=128, freq_dim=32, text_dim=32, text_len=8, num_layers=10)
    model = InfiniteTalkModel(cfg).eval()
    for block in model.blocks:
        block.compile(backend="eager", dynamic=False)  # dynamo's graph capture alone: what decides recompiles
    x, y = torch.randn(1, 16, 3, 8, 8), torch.randn(1, 20, 3, 8, 8)
    t, text, clip = torch.tensor([500.0]), torch.randn(1, 5, 32), torch.randn(1, 257, CLIP_DIM)
    audio = torch.randn(1, 9, 5, WAV2VEC_LAYERS, WAV2VEC_DIM)
    torch._dynamo.reset()
    counters.clear()
    init_rank(0, 1, free_port(), torch.device("cpu"))
    try:
        parallel = SequenceParallel(model)
        with torch.no_grad():
            conditions = parallel.conditions(text, clip, audio, model.token_grid(x.shape))
            for _ in range(2):
                parallel(x, t, y, conditions)
        assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
        assert not counters["recompiles"] and not counters["graph_break"], (
            counters["recompiles"],
            counters["graph_break"],
        )
    finally:
        dist.destroy_process_group()
        torch._dynamo.reset()


def test_frame_runs_cover_the_slice_once() -> None:
    # 45 tokens, 15 a frame, 4 ranks of 12: rank 1 holds 12..23 = the end of frame 0 and the start of frame 1
    assert frame_runs(Shard(1, 4, 45), 15) == [(0, 3, 0, 1), (3, 12, 1, 1)]
    assert frame_runs(Shard(3, 4, 45), 15) == [(0, 9, 2, 1)]  # 36..44, then 3 padding tokens
    assert frame_runs(Shard(0, 2, 90), 15) == [(0, 45, 0, 3)]  # whole frames in one call
    assert frame_runs(Shard(3, 4, 6), 15) == []  # a rank with nothing but padding
    assert Shard(3, 4, 6).padding == 2 and Shard(2, 4, 6).padding == 0


def test_heads_must_divide_by_the_world() -> None:
    check_heads(40, 8)
    with pytest.raises(ValueError, match="40 attention heads to divide by the world size; 3 ranks do not"):
        check_heads(40, 3)


def test_the_benchmark_imports_nothing_the_gpu_machine_lacks() -> None:
    """benchmarks/infinitetalk_multigpu.py runs where Python has torch (numpy, safetensors, pydantic) and nothing
    else: with the service stack made unimportable, it still imports, and loads no other spinbot module."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, importlib.util\n"
        "for name in ('fastapi', 'langgraph', 'sqlalchemy', 'av', 'diffusers', 'transformers', 'redis'):\n"
        "    sys.modules[name] = None\n"
        f"spec = importlib.util.spec_from_file_location('bench', {str(root / BENCHMARK)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in sys.modules if m.startswith('spinbot')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(
        [
            "spinbot",
            "spinbot.backends",
            "spinbot.backends.quiet",  # warnings filters only (third-party noise at the backends' imports)
            "spinbot.backends.talk",
            "spinbot.backends.talk.infinitetalk",
            "spinbot.backends.talk.infinitetalk.model",
            "spinbot.backends.talk.infinitetalk.rank_group",
            "spinbot.backends.talk.infinitetalk.sequence_parallel",
        ]
    )
