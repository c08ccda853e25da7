"""The FP8 option: which layers it swaps, and that its quantization keeps the output close (CPU emulation)."""

from __future__ import annotations

import json

import torch
from torch import nn

from spinbot.backends.fp8 import E4M3, INFINITETALK_LINEARS, FP8Linear, quantize_rows, use_fp8
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from tests.support.random_weights import randomized
from tests.support.triton_interpreter import run_interpreted


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

    model = randomized(
        lambda: DiT(
            dim=64, depth=2, heads=4, dim_head=16, ff_mult=2, text_dim=16, conv_layers=1, text_num_embeds=40, mel_dim=20
        )
    )
    x, cond, text = torch.randn(2, 30, 20), torch.randn(2, 30, 20), torch.randint(0, 40, (2, 25))
    with torch.inference_mode():
        expected = model(x=x, cond=cond, text=text, time=torch.full((2,), 0.5))
        assert use_fp8(model.transformer_blocks, F5_LINEARS) == 2 * len(F5_LINEARS)
        got = model(x=x, cond=cond, text=text, time=torch.full((2,), 0.5))
    assert float((got - expected).norm() / expected.norm()) < 0.1


# ---- the fused feed-forward: bias, GELU and quantization in one kernel ---------------------------------------------


def tanh_mlp(dim: int = 64, hidden: int = 200) -> nn.Sequential:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
    with torch.no_grad():
        mlp[0].bias.normal_(0.0, 0.5)  # a bias that matters: the kernel adds it before the GELU
    return mlp


def test_gelu_quantization_is_the_gelu_of_the_biased_rows_in_e4m3():
    from spinbot.backends.fp8_gelu import gelu_quantize_rows

    x, bias = torch.randn(33, 200) * 3, torch.randn(200)
    values, scale = gelu_quantize_rows(x, bias)
    expected = torch.nn.functional.gelu(x + bias, approximate="tanh")
    assert values.dtype == E4M3 and scale.shape == (33, 1)
    assert (values.float().abs().amax(dim=1) == 448.0).all()
    assert ((values.float() * scale - expected).abs() <= expected.abs() * 2**-3 + scale * 2**-9).all()


def test_the_fused_feed_forward_matches_the_fp8_layers_one_by_one():
    from spinbot.backends.fp8 import FP8FeedForward

    mlp = tanh_mlp()
    x = torch.randn(2, 30, 64)
    with torch.inference_mode():
        exact = mlp(x)
        layers = nn.Sequential(FP8Linear(mlp[0]), mlp[1], FP8Linear(mlp[2]))
        fused = FP8FeedForward(*layers)
        one_by_one, got = layers(x), fused(x)
        compiled = torch.compile(fused, fullgraph=True)(x)
    assert got.shape == exact.shape and got.dtype == exact.dtype
    assert float((got - one_by_one).norm() / one_by_one.norm()) < 0.02  # both round the hidden rows to e4m3
    assert float((got - exact).norm() / exact.norm()) < 0.05
    assert torch.allclose(compiled, got, rtol=1e-4, atol=1e-5)  # the custom op under torch.compile


def test_use_fp8_fuses_the_infinitetalk_feed_forward_and_keeps_its_keys():
    from spinbot.backends.fp8 import FP8FeedForward

    cfg = InfiniteTalkConfig(
        dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, freq_dim=32, intermediate_dim=16, output_dim=32
    )
    model = InfiniteTalkModel(cfg)
    keys = set(model.state_dict())
    use_fp8(model.blocks, INFINITETALK_LINEARS, fast_accum=True)
    assert all(type(block.ffn) is FP8FeedForward for block in model.blocks)
    assert all(m.fast_accum for m in model.modules() if isinstance(m, FP8Linear))
    assert {k.rsplit(".", 1)[0] for k in model.state_dict()} == {k.rsplit(".", 1)[0] for k in keys}


GELU_INTERPRETER_SCRIPT = """
import json, torch
from spinbot.backends.fp8_gelu import gelu_quantize_rows, reference
torch.manual_seed(0)
out = {}
for name, (rows, cols, bias) in {"bias": (5, 300, True), "no-bias": (3, 1024, False)}.items():
    x = torch.randn(rows, cols) * 4
    b = torch.randn(cols) if bias else None
    values, scale = gelu_quantize_rows(x, b)
    want_values, want_scale = reference(x, b)
    got, want = values.float() * scale, want_values.float() * want_scale
    out[name] = [float((got - want).norm() / want.norm()), float((scale / want_scale - 1).abs().max())]
print(json.dumps(out))
"""


def test_the_gelu_kernel_matches_its_reference_under_the_interpreter():
    errors = json.loads(run_interpreted(GELU_INTERPRETER_SCRIPT))
    assert set(errors) == {"bias", "no-bias"}  # every case ran and reported
    for name, (value_error, scale_error) in errors.items():
        assert value_error < 1e-3, name  # e4m3 ties may round apart: a few values one step off at most
        assert scale_error < 1e-5, name


ROUNDING_SCRIPT = """
import json, torch, triton, triton.language as tl
from spinbot.backends.attention.eight_bit_kernel import _round_to_e4m3

@triton.jit
def rounded(X, Out, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Out + offs, _round_to_e4m3(tl.load(X + offs, mask=offs < n)), mask=offs < n)

# ties between two e4m3 values (168 lies between 160 and 176), near-ties, subnormals, and values on the grid
x = torch.tensor([168.0, 184.0, 5.25, 5.75, 0.01171875, 167.9, 168.1, 0.001, 448.0, 1.0, 0.0, 2**-9 * 1.5])
out = torch.empty_like(x)
rounded[(1,)](x, out, x.numel(), BLOCK=16)
print(json.dumps([out.tolist(), x.to(torch.float8_e4m3fn).float().tolist()]))
"""


def test_the_interpreters_e4m3_rounding_matches_torchs_ties_to_even():
    got, want = json.loads(run_interpreted(ROUNDING_SCRIPT, timeout=300))
    assert got == want  # 168 -> 160 and 184 -> 192 (even mantissas), as the GPU's conversion rounds
