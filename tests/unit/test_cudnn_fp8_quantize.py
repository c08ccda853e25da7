"""cuDNN FP8 attention's two-pass Triton quantization (cudnn_fp8_quantize.py) against its PyTorch reference, under
Triton's interpreter (the GPU run is tests/gpu/test_attention_gpu.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, torch
from spinbot.backends.attention import cudnn_fp8
torch.manual_seed(0)
out = {}
# (batch, tokens, heads, head dim, pad multiple): ragged tiles, two token slices, a head narrower than a tile
for name, (b, l, h, d, multiple) in {
    "ragged": (2, 150, 3, 128, 128),
    "two-slices": (1, 1100, 2, 128, 64),
    "narrow-heads": (1, 70, 3, 64, 1),
}.items():
    offsets = torch.randn(1, 1, h, d) * 6  # per-channel key and value offsets: what the smoothing removes
    q = (torch.randn(b, l, h, d) * 2).bfloat16()
    k = (torch.randn(b, l, h, d) + offsets).bfloat16()
    v = (torch.randn(b, l, h, d) * 0.5 - offsets).bfloat16()
    got = cudnn_fp8.quantize(q, k, v, multiple)
    want = cudnn_fp8.reference_quantize(q, k, v, multiple)
    row = {"shape": list(got.q.shape) == list(want.q.shape) and got.tokens == want.tokens}
    for t in ("q", "k", "v"):
        a = getattr(got, t).float() * getattr(got, "descale_" + t)
        w = getattr(want, t).float() * getattr(want, "descale_" + t)
        row[t + "_err"] = float((a - w).norm() / w.norm())
        row[t + "_same"] = float((getattr(got, t).float() == getattr(want, t).float()).float().mean())
        row[t + "_descale"] = float((getattr(got, "descale_" + t) / getattr(want, "descale_" + t) - 1).abs())
        row[t + "_pad_zero"] = bool((getattr(got, t)[:, l:].float() == 0).all())
    row["v_mean"] = float((got.v_mean - want.v_mean).abs().max())
    row["scale_o"] = float((got.scale_o * want.descale_v - 1).abs())
    out[name] = row
print(json.dumps(out))
"""


def test_the_two_pass_quantization_matches_its_reference_under_the_interpreter():
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == {"ragged", "two-slices", "narrow-heads"}
    for name, row in results.items():
        assert row["shape"], name
        for t in ("q", "k", "v"):
            # the same scales and e4m3 values, up to float32 rounding of the means (a value on a rounding tie)
            assert row[t + "_descale"] < 1e-5, (name, t, row)
            assert row[t + "_same"] > 0.999, (name, t, row)
            assert row[t + "_err"] < 1e-3, (name, t, row)
            assert row[t + "_pad_zero"], (name, t)
        assert row["v_mean"] < 1e-5 and row["scale_o"] < 1e-5, (name, row)


def test_the_reference_is_what_quantize_gives_on_the_cpu():
    import torch

    from spinbot.backends.attention import cudnn_fp8

    q, k, v = (torch.randn(1, 40, 2, 16) for _ in range(3))
    got, want = cudnn_fp8.quantize(q, k, v, 32), cudnn_fp8.reference_quantize(q, k, v, 32)
    assert torch.equal(got.k.float(), want.k.float()) and torch.equal(got.descale_v, want.descale_v)
