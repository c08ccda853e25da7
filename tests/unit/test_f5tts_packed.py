"""The packed DiT forward computes what the package's DiT computes on a padded batch with its mask switched on."""

from __future__ import annotations

import copy

import pytest
import torch
from f5_tts.model import DiT

from spinbot.backends.tts.f5.packed import PackedDiT, known_lengths, use_packing
from tests.support.random_weights import randomized


def tiny_dit(**arch) -> DiT:
    return randomized(
        lambda: DiT(
            dim=64,
            depth=2,
            heads=4,
            dim_head=16,
            ff_mult=2,
            text_dim=16,
            conv_layers=1,
            text_num_embeds=40,
            mel_dim=20,
            attn_mask_enabled=True,
            **arch,
        )
    )


def batch(lengths: list[int]):
    frames = max(lengths)
    mask = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    x, cond = torch.randn(len(lengths), frames, 20), torch.randn(len(lengths), frames, 20)
    return x, cond, torch.randint(0, 40, (len(lengths), 25)), mask


@pytest.mark.parametrize("cfg_infer", [True, False])
@pytest.mark.parametrize("arch", [{}, {"pe_attn_head": 1}, {"qk_norm": "rms_norm"}])
def test_same_output_as_the_packages_masked_forward(arch, cfg_infer):
    package = tiny_dit(**arch)
    ours = copy.deepcopy(package)
    packed = use_packing(ours, compile=False)
    lengths = [37, 29, 18]
    x, cond, text, mask = batch(lengths)
    calls, block = [], packed.block

    def counted(*args):
        calls.append(1)
        return block(*args)

    packed.block = counted
    with torch.inference_mode():
        expected = package(x=x, cond=cond, text=text, time=torch.tensor(0.3), mask=mask, cfg_infer=cfg_infer)
        with known_lengths(ours, lengths):
            got = ours(x=x, cond=cond, text=text, time=torch.tensor(0.3), mask=mask, cfg_infer=cfg_infer)
    assert len(calls) == 2, "the packed blocks ran"
    rows = torch.cat([mask, mask]) if cfg_infer else mask  # cfg_infer: the conditional rows, then the others
    valid = rows[..., None].expand_as(got)
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-4, atol=1e-4)  # fused matmuls: other sums
    assert torch.count_nonzero(got[~valid]) == 0  # the padding comes back as zeros


def test_a_chunk_alone_equals_the_chunk_in_a_batch():
    model = tiny_dit()
    use_packing(model, compile=False)
    x, cond, text, mask = batch([30, 21])
    with torch.inference_mode():
        with known_lengths(model, [30, 21]):
            together = model(x=x, cond=cond, text=text, time=torch.tensor(0.5), mask=mask, cfg_infer=True)
        with known_lengths(model, [21]):
            alone = model(x=x[1:, :21], cond=cond[1:, :21], text=text[1:], time=torch.tensor(0.5), cfg_infer=True)
    torch.testing.assert_close(together[1, :21], alone[0, :21], rtol=1e-4, atol=1e-4)  # conditional rows
    torch.testing.assert_close(together[3, :21], alone[1, :21], rtol=1e-4, atol=1e-4)  # unconditional rows


def test_without_a_plan_the_packages_forward_runs_with_its_mask_on():
    package = tiny_dit()
    ours = copy.deepcopy(package)
    for block in ours.transformer_blocks:
        block.attn.processor.attn_mask_enabled = False  # as the v1 configs ship it
    packed = use_packing(ours, compile=False)
    assert isinstance(ours.forward, PackedDiT) and packed.layouts == {}
    assert all(block.attn.processor.attn_mask_enabled for block in ours.transformer_blocks)
    x, cond, text, mask = batch([25, 12])
    with torch.inference_mode():
        expected = package(x=x, cond=cond, text=text, time=torch.full((2,), 0.4), mask=mask)
        got = ours(x=x, cond=cond, text=text, time=torch.full((2,), 0.4), mask=mask)  # a time per row: unplanned
    torch.testing.assert_close(got[mask], expected[mask])


def test_fused_projections_are_views_of_one_weight_and_leave_the_state_dict_alone():
    model = tiny_dit()
    keys = set(model.state_dict())
    use_packing(model, compile=False)
    attn = model.transformer_blocks[0].attn
    inner = attn.to_q.weight.shape[0]
    assert attn.to_k.weight.data_ptr() == attn.qkv_weight[inner:].data_ptr()
    assert attn.to_v.bias.data_ptr() == attn.qkv_bias[2 * inner :].data_ptr()
    assert set(model.state_dict()) == keys


def test_the_grouped_conv_kernel_equals_conv_mish_mask_in_tritons_interpreter():
    """grouped_conv.py's Triton kernel, run by Triton's CPU interpreter (CI has no GPU) in a subprocess, against
    torch's Conv1d + Mish + mask on odd sizes (frames not a multiple of the block, padding inside the batch)."""
    from tests.support.triton_interpreter import run_interpreted

    script = """
import torch
from spinbot.backends.tts.f5.grouped_conv import grouped_conv_mish, tap_major_weight
torch.manual_seed(0)
conv = torch.nn.Conv1d(32, 32, 7, groups=2, padding=3)
lengths = torch.tensor([70, 45])
keep = torch.arange(70)[None] < lengths[:, None]
x = torch.randn(2, 70, 32).masked_fill(~keep[..., None], 0.0)
with torch.no_grad():
    got = grouped_conv_mish(x, tap_major_weight(conv), conv.bias, keep)
    expected = torch.nn.functional.mish(conv(x.permute(0, 2, 1)).permute(0, 2, 1)).masked_fill(~keep[..., None], 0)
print(float((got - expected).abs().max()), float(expected.abs().max()))
"""
    error, scale = map(float, run_interpreted(script, timeout=300).split())
    assert scale > 0.5 and error < 1e-4


def test_f5tts_imports_beside_flash_attn_4(tmp_path):
    """flash-attn-4 installs flash_attn.cute alone (a namespace package), which breaks f5-tts's own import."""
    import os
    import subprocess
    import sys

    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    (tmp_path / "flash_attn" / "cute" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    plain = subprocess.run([sys.executable, "-c", "import f5_tts.model"], env=env, capture_output=True, text=True)
    assert plain.returncode != 0 and "flash_attn_func" in plain.stderr
    shielded = subprocess.run(
        [
            sys.executable,
            "-c",
            "from spinbot.backends.tts.f5.loading import import_f5_model; print(import_f5_model().CFM.__name__)",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert shielded.returncode == 0, shielded.stderr[-500:]
    assert shielded.stdout.strip() == "CFM"


@pytest.mark.parametrize(
    ("device", "dtype", "capability", "kernel"),
    [
        ("cuda", torch.float16, (9, 0), "flash2"),
        ("cuda", torch.bfloat16, (8, 0), "flash2"),
        ("cuda", torch.float16, (7, 5), "rows"),  # no FlashAttention in torch before Ampere: one SDPA call per row
        ("cuda", torch.float32, (9, 0), "rows"),
        ("cpu", torch.float32, (9, 0), "rows"),
    ],
)
def test_the_attention_kernel_is_one_that_runs_there(monkeypatch, device, dtype, capability, kernel):
    from spinbot.backends.tts.f5.packed import attention_kernel

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setitem(__import__("sys").modules, "flash_attn.cute.interface", None)  # not installed (CI)
    assert attention_kernel("auto", torch.device(device), dtype) == kernel
    assert attention_kernel("flash2", torch.device(device), dtype) == kernel


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_flash4_asked_for_where_it_cannot_run_is_one_clear_error(monkeypatch, capability):
    from spinbot.backends.tts.f5.packed import attention_kernel
    from spinbot.errors import BackendUnavailable

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setitem(__import__("sys").modules, "flash_attn.cute.interface", None)  # not installed (CI)
    assert attention_kernel("flash4", torch.device("cpu"), torch.float32) == "rows"  # the CPU attends row by row
    with pytest.raises(BackendUnavailable, match="SPINBOT_TTS_ATTENTION=flash4 needs the flash-attn-4 package"):
        attention_kernel("flash4", torch.device("cuda"), torch.float16)
