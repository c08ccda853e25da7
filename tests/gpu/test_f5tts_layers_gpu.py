"""The packed F5-TTS layers' CUDA-only paths against the package's modules, in float16.

Run on the GPU machine: python -m pytest -q -m gpu tests/gpu/test_f5tts_layers_gpu.py (needs f5-tts)
Skipped where torch.cuda.is_available() is false (CI has no GPU).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("f5_tts")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_the_gelu_epilogue_equals_the_feed_forward_module():
    from f5_tts.model.modules import FeedForward

    from spinbot.backends.tts.f5.layers import feed_forward

    torch.manual_seed(0)
    ff = FeedForward(dim=1024, mult=2, approximate="tanh").cuda().half().eval()
    x = torch.randn(3000, 1024, device="cuda", dtype=torch.float16)
    with torch.inference_mode():
        got, expected = feed_forward(ff, x), ff(x)
    assert (got.float() - expected.float()).norm() / expected.float().norm() < 2e-3


def test_flash_varlen_equals_one_sdpa_call_per_row():
    from spinbot.backends.tts.f5.packed import varlen_attention

    lengths = [300, 170, 255]
    q, k, v = (torch.randn(sum(lengths), 16, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    offsets = torch.tensor([0, 300, 470, 725], device="cuda", dtype=torch.int32)
    flash = varlen_attention(q, k, v, offsets, max(lengths), None)
    rows = varlen_attention(q.float(), k.float(), v.float(), offsets, max(lengths), [0, 300, 470, 725])
    torch.testing.assert_close(flash.float(), rows, rtol=2e-3, atol=2e-3)
