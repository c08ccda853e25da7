"""The FP8 feed-forward on a CUDA GPU with FP8 tensor cores: the fused GELU quantization kernel against its torch
reference (at the 14B FFN's width), and FP8FeedForward against the same layers run one by one, eager and compiled.

Run on the GPU machine: python -m pytest -q -m gpu tests/gpu/test_fp8_gpu.py
Skipped where torch.cuda.is_available() is false (CI has no GPU).
"""

from __future__ import annotations

import pytest

from tests.gpu.fp8_gpu import NEEDS_FP8_GPU, relative_error, torch

pytestmark = NEEDS_FP8_GPU


@pytest.mark.parametrize("cols", [13824, 1000])
def test_the_gelu_kernel_matches_its_reference(cols):
    from spinbot.backends.fp8_gelu import gelu_quantize_rows, reference

    gen = torch.Generator("cuda").manual_seed(0)
    x = (torch.randn(4096, cols, generator=gen, device="cuda") * 3).bfloat16()
    bias = torch.randn(cols, generator=gen, device="cuda").bfloat16()
    values, scale = gelu_quantize_rows(x, bias)
    want_values, want_scale = reference(x, bias)
    assert torch.allclose(scale, want_scale, rtol=1e-5)
    assert relative_error(values.float() * scale, want_values.float() * want_scale) < 1e-3  # ties one step apart
    mismatched = (values.float() != want_values.float()).float().mean().item()
    assert mismatched < 1e-3


def test_the_fused_feed_forward_matches_the_layers_one_by_one_eager_and_compiled():
    from torch import nn

    from spinbot.backends.fp8 import FP8FeedForward, FP8Linear

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1024, 2816), nn.GELU(approximate="tanh"), nn.Linear(2816, 1024)).cuda().bfloat16()
    x = torch.randn(2, 3000, 1024, device="cuda").bfloat16()
    with torch.inference_mode():
        exact = mlp(x)
        layers = nn.Sequential(FP8Linear(mlp[0]), mlp[1], FP8Linear(mlp[2]))
        one_by_one = layers(x)
        fused = FP8FeedForward(*layers)
        got, compiled = fused(x), torch.compile(fused)(x)
    assert got.dtype == torch.bfloat16 and got.shape == exact.shape
    assert relative_error(got, one_by_one) < 0.02
    assert relative_error(got, exact) < 0.06
    assert relative_error(compiled, got) < 1e-3
