"""The key-padding attention processor computes what the package's masked AttnProcessor computes."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from f5_tts.model import DiT

from spinbot.backends.tts.f5.attention import known_lengths, padding_bias, use_key_padding_attention


def tiny_dit(**arch) -> DiT:
    torch.manual_seed(0)
    model = DiT(dim=64, depth=2, heads=4, dim_head=16, ff_mult=2, text_dim=16, conv_layers=1, text_num_embeds=40,
                mel_dim=20, attn_mask_enabled=True, **arch).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)  # zero-initialised layers too: every path does work
    return model


@pytest.mark.parametrize("host_lengths", [False, True])
@pytest.mark.parametrize("arch", [{}, {"pe_attn_head": 1}, {"qk_norm": "rms_norm"}])
def test_same_output_as_the_packages_masked_processor(arch, host_lengths):
    package = tiny_dit(**arch)
    ours = copy.deepcopy(package)
    assert use_key_padding_attention(ours) == 2
    lengths = torch.tensor([37, 29, 18])
    mask = torch.arange(37)[None] < lengths[:, None]
    x, cond = torch.randn(3, 37, 20), torch.randn(3, 37, 20)
    text = torch.randint(0, 40, (3, 25))
    lengths = lengths.tolist() if host_lengths else None
    with torch.inference_mode():
        expected = package(x=x, cond=cond, text=text, time=torch.full((3,), 0.3), mask=mask, cfg_infer=True)
        with known_lengths(ours, lengths) if lengths else contextlib.nullcontext():
            got = ours(x=x, cond=cond, text=text, time=torch.full((3,), 0.3), mask=mask, cfg_infer=True)
    mask = torch.cat([mask, mask])  # cfg_infer: the conditional rows, then the unconditional ones
    valid = mask[..., None].expand_as(got)
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("host_lengths", [False, True])
def test_a_chunk_alone_equals_the_chunk_in_a_padded_batch(host_lengths):
    model = tiny_dit()
    use_key_padding_attention(model)
    x, cond, text = torch.randn(2, 30, 20), torch.randn(2, 30, 20), torch.randint(0, 40, (2, 25))
    mask = torch.arange(30)[None] < torch.tensor([30, 21])[:, None]
    with torch.inference_mode(), known_lengths(model, [30, 21]) if host_lengths else contextlib.nullcontext():
        batch = model(x=x, cond=cond, text=text, time=torch.full((2,), 0.5), mask=mask)
        alone = model(x=x[1:, :21], cond=cond[1:, :21], text=text[1:], time=torch.full((1,), 0.5))
    torch.testing.assert_close(batch[1, :21], alone[0], rtol=1e-4, atol=1e-4)


def test_padding_bias_is_a_16_aligned_broadcast_row():
    mask = torch.arange(21)[None] < torch.tensor([21, 9])[:, None]
    bias = padding_bias(mask, torch.float16)
    assert bias.shape == (2, 1, 1, 21) and bias.stride(0) % 16 == 0
    assert torch.equal(bias[1, 0, 0, 9:], torch.full((12,), float("-inf"), dtype=torch.float16))
    assert torch.equal(bias[:, 0, 0][mask], torch.zeros(30, dtype=torch.float16))
    assert padding_bias(None, torch.float16) is None
