"""The FP8 option: which layers it swaps, and that its quantization keeps the output close (CPU emulation)."""

from __future__ import annotations

import torch
from torch import nn

from spinbot.backends.fp8 import E4M3, INFINITETALK_LINEARS, FP8Linear, quantize_rows, use_fp8
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel


def test_row_quantization_round_trips_within_e4m3_precision():
    x = torch.randn(64, 256) * torch.logspace(-3, 3, 64)[:, None]  # rows of very different magnitude
    values, scale = quantize_rows(x)
    assert values.dtype == E4M3 and scale.shape == (64, 1)
    back = values.float() * scale
    assert (values.float().abs().amax(dim=1) == 448.0).all()  # each row uses the full range
    assert ((back - x).abs() <= x.abs() * 2**-3 + scale * 2**-9).all()  # 3 mantissa bits, subnormals


def test_fp8_linear_is_close_to_the_linear():
    torch.manual_seed(0)
    linear = nn.Linear(128, 96).to(torch.bfloat16)
    x = torch.randn(4, 10, 128, dtype=torch.bfloat16)
    expected = linear(x).float()
    got = FP8Linear(linear)(x)
    assert got.shape == expected.shape and got.dtype == torch.bfloat16
    assert float((got.float() - expected).norm() / expected.norm()) < 0.05


def test_use_fp8_swaps_exactly_the_blocks_big_linears():
    cfg = InfiniteTalkConfig(
        dim=64,
        ffn_dim=128,
        num_heads=4,
        num_layers=3,
        text_dim=32,
        freq_dim=32,
        intermediate_dim=16,
        output_dim=32,
        context_tokens=4,
    )
    model = InfiniteTalkModel(cfg)
    assert use_fp8(model.blocks, INFINITETALK_LINEARS) == 3 * len(INFINITETALK_LINEARS)
    swapped = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
    assert swapped == {f"blocks.{i}.{path}" for i in range(3) for path in INFINITETALK_LINEARS}
    # the rest keeps its layers: image / text keys and values, embeddings, the head
    assert isinstance(model.blocks[0].cross_attn.k, nn.Linear) and isinstance(model.head.head, nn.Linear)


def test_f5_blocks_take_fp8_and_stay_close():
    from f5_tts.model import DiT

    from spinbot.backends.fp8 import F5_LINEARS

    torch.manual_seed(0)
    model = DiT(
        dim=64, depth=2, heads=4, dim_head=16, ff_mult=2, text_dim=16, conv_layers=1, text_num_embeds=40, mel_dim=20
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    x, cond, text = torch.randn(2, 30, 20), torch.randn(2, 30, 20), torch.randint(0, 40, (2, 25))
    with torch.inference_mode():
        expected = model(x=x, cond=cond, text=text, time=torch.full((2,), 0.5))
        assert use_fp8(model.transformer_blocks, F5_LINEARS) == 2 * len(F5_LINEARS)
        got = model(x=x, cond=cond, text=text, time=torch.full((2,), 0.5))
    assert float((got - expected).norm() / expected.norm()) < 0.1
