"""The packed F5-TTS layers' CUDA-only paths against the package's modules, in float16.

Run on the GPU machine: python -m pytest -q -m gpu tests/gpu/test_f5tts_layers_gpu.py (needs f5-tts)
Skipped where torch.cuda.is_available() is false (CI has no GPU).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("x_transformers")  # packed.py's rotary helper
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_the_gelu_epilogue_equals_the_feed_forward_module():
    from torch import nn

    from spinbot.backends.tts.f5.layers import feed_forward

    # f5_tts.model.modules.FeedForward(dim=1024, mult=2, approximate="tanh"), built from the same layers (importing
    # f5_tts.model needs librosa, which the GPU machine here lacks)
    ff = nn.Module()
    ff.ff = nn.Sequential(
        nn.Sequential(nn.Linear(1024, 2048), nn.GELU(approximate="tanh")), nn.Dropout(0.0), nn.Linear(2048, 1024)
    )
    ff.forward = ff.ff.forward
    torch.manual_seed(0)
    ff = ff.cuda().half().eval()
    x = torch.randn(3000, 1024, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        got, expected = feed_forward(ff, x), ff(x)
    error = float((got.float() - expected.float()).norm() / expected.float().norm())
    assert error < 2e-3, f"relative error {error:.3g}"


def test_the_grouped_conv_kernel_equals_cudnn_conv_mish_mask():
    from spinbot.backends.tts.f5.grouped_conv import grouped_conv_mish, tap_major_weight

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(1024, 1024, 31, groups=16, padding=15).cuda().half()
    keep = torch.arange(1884, device="cuda")[None] < torch.tensor([1884, 1355, 1700], device="cuda")[:, None]
    x = torch.randn(3, 1884, 1024, device="cuda", dtype=torch.float16).masked_fill(~keep[..., None], 0.0)
    with torch.inference_mode():
        got = grouped_conv_mish(x, tap_major_weight(conv), conv.bias, keep)
        expected = torch.nn.functional.mish(conv(x.permute(0, 2, 1)).permute(0, 2, 1)).masked_fill(~keep[..., None], 0)
    error = float((got.float() - expected.float()).norm() / expected.float().norm())
    assert error < 2e-3, f"relative error {error:.3g}"


def test_flash_varlen_equals_one_sdpa_call_per_row():
    from spinbot.backends.tts.f5.packed import varlen_attention

    lengths = [300, 170, 255]
    q, k, v = (torch.randn(sum(lengths), 16, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    offsets = torch.tensor([0, 300, 470, 725], device="cuda", dtype=torch.int32)
    flash = varlen_attention(q, k, v, offsets, max(lengths), None, "flash2")
    rows = varlen_attention(q.float(), k.float(), v.float(), offsets, max(lengths), [0, 300, 470, 725], "rows")
    torch.testing.assert_close(flash.float(), rows, rtol=2e-3, atol=2e-3)
