"""The 8-bit attention on a CUDA GPU (FP8 tensor cores: Ada or Hopper) against SDPA, eager and inside torch.compile
(the custom op with its PyTorch quantization fused by Inductor): our Triton kernel, and cuDNN's FP8 attention
(Hopper or newer, with the gpu extra's cudnn-frontend).

Run on the GPU machine: python -m pytest -q -m gpu tests/gpu/test_attention_gpu.py
Skipped where torch.cuda.is_available() is false (CI has no GPU).
"""

from __future__ import annotations

import pytest

from tests.gpu.fp8_gpu import NEEDS_FP8_GPU, relative_error, torch

pytestmark = NEEDS_FP8_GPU


def qkv(tokens: int = 3000, heads: int = 4, dim: int = 128):
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, dim, generator=gen, device="cuda") for _ in range(3))
    k = k + 2.0 * torch.randn(heads, dim, generator=gen, device="cuda")  # a shared key offset
    v = v + torch.randn(heads, dim, generator=gen, device="cuda")
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
needs_cudnn_fp8 = pytest.mark.skipif(not HOPPER, reason="cuDNN's FP8 attention needs Hopper or newer")
KERNELS = ["int8", "fp8", pytest.param("cudnn-fp8", marks=needs_cudnn_fp8)]
# bounds: about 1.5x what each measured on the H200 (offset keys, 3,000 tokens)
BOUNDS = {"int8": 2e-2, "fp8": 4e-2, "cudnn-fp8": 8e-2}


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("tokens", [3000, 3072])
def test_the_kernel_matches_float32_attention(name, tokens):
    from spinbot.backends.attention import select_attention
    from spinbot.backends.attention.sdpa import sdpa_attention

    q, k, v = qkv(tokens)
    attend = select_attention(name, torch.device("cuda"))
    with torch.inference_mode():
        got = attend(q, k, v)
        expected = sdpa_attention(q.float(), k.float(), v.float())
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    assert torch.isfinite(got).all()
    assert relative_error(got, expected) < BOUNDS[name]


@pytest.mark.parametrize("name", KERNELS)
def test_the_kernel_runs_inside_a_compiled_function(name):
    from spinbot.backends.attention import select_attention

    q, k, v = qkv(tokens=1000)
    attend = select_attention(name, torch.device("cuda"))

    def block(q, k, v):
        return attend(q * 1.5, k, v) + 1.0

    with torch.inference_mode():
        expected = block(q, k, v)
        got = torch.compile(block, fullgraph=True)(q, k, v)
    # Inductor's fused quantization may round a few values to the neighbouring 8-bit step
    assert relative_error(got, expected) < (1e-2 if name != "cudnn-fp8" else 3e-2)


@needs_cudnn_fp8
def test_cudnn_fp8_over_slices_of_the_queries_equals_the_whole():
    """run_cudnn with q a slice of the query rows (its own graph and padding mask) gives those rows of the whole
    attention (the split benchmarks/attention_overlap_gpu.py times; at 720p the halves were equal bit for bit; here
    cuDNN may pick another plan for the smaller shape, whose key tiles quantize P at other running maxima)."""
    from spinbot.backends.attention import cudnn_fp8

    x = cudnn_fp8.quantize(*qkv(3000), multiple=cudnn_fp8.TOKEN_MULTIPLE)  # 3,072 rows, 3,000 real
    args = (x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)
    whole = cudnn_fp8.run_cudnn(x.q, x.k, x.v, *args).float()
    first = cudnn_fp8.run_cudnn(x.q[:, :1536], x.k, x.v, *args, q_tokens=1536).float()
    second = cudnn_fp8.run_cudnn(x.q[:, 1536:], x.k, x.v, *args, q_tokens=x.tokens - 1536).float()
    assert whole.abs().amax() > 0  # a real output
    # a wrong slice (other rows, keys cut short) is tens of percent off; another plan's tiling of P: 2.3%
    assert relative_error(first, whole[:, :1536]) < 5e-2
    assert relative_error(second[:, : x.tokens - 1536], whole[:, 1536 : x.tokens]) < 5e-2
