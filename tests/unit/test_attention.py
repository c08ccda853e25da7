"""Self-attention kernels (spinbot.backends.attention): the choice and its one-line refusals, the 8-bit quantization,
the Triton kernel in Triton's interpreter and the CPU emulation against SDPA, and the InfiniteTalk model with each
kernel. The GPU's own timings and errors: benchmarks/infinitetalk_speed_gpu.py."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import in_ci, require_module

if in_ci():
    import torch  # CI installs torch: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")

from spinbot.backends.attention import (
    ATTENTION_CHOICES,
    eight_bit,
    resolve_attention,
    select_attention,
)
from spinbot.backends.attention.sdpa import sdpa_attention
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.errors import BackendUnavailable, SettingsError


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).norm() / expected.float().norm())


def qkv(batch: int = 1, tokens: int = 77, heads: int = 2, dim: int = 32, key_offset: float = 3.0, seed: int = 0):
    """Random q, k, v [B, L, H, D]; the keys share a per-channel offset and the values a mean, as trained DiTs'
    do (what SageAttention's smoothing is for)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, tokens, heads, dim, generator=gen)
    k = torch.randn(batch, tokens, heads, dim, generator=gen) + key_offset * torch.randn(dim, generator=gen)
    v = torch.randn(batch, tokens, heads, dim, generator=gen) + 1.0
    return q, k, v


# ---- the choice -------------------------------------------------------------------------------------------------


def test_an_unknown_kernel_is_refused_in_one_line():
    with pytest.raises(SettingsError) as err:  # a refused SPINBOT_ value, like the others
        select_attention("flash9", torch.device("cpu"), "SPINBOT_TALK_ATTENTION")
    message = str(err.value)
    assert "\n" not in message and "SPINBOT_TALK_ATTENTION='flash9'" in message
    assert all(name in message for name in ATTENTION_CHOICES)


def test_auto_is_cudnn_fp8_where_it_runs_then_int8_then_sdpa(monkeypatch, use_settings):
    from spinbot.backends.attention import cudnn_fp8
    from spinbot.settings import get_settings

    use_settings()
    assert get_settings().talk_attention == "auto"
    assert resolve_attention("auto", torch.device("cpu")) == "sdpa"
    assert select_attention("auto", torch.device("cpu")) is select_attention("sdpa", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cases = (
        ((9, 0), None, "cudnn-fp8"),
        ((9, 0), "no cudnn-frontend", "int8"),
        ((8, 9), "needs Hopper", "int8"),
        ((8, 6), None, "sdpa"),
        ((7, 5), None, "sdpa"),
    )
    for capability, lacking, expected in cases:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        monkeypatch.setattr(cudnn_fp8, "missing", lambda device, why=lacking: why)
        assert resolve_attention("auto", torch.device("cuda")) == expected
        assert resolve_attention("fp8", torch.device("cuda")) == "fp8"  # a named kernel is never replaced


def test_cudnn_fp8_names_what_it_lacks_in_one_line(monkeypatch):
    from spinbot.backends.attention import cudnn_fp8

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    with pytest.raises(BackendUnavailable) as err:
        select_attention("cudnn-fp8", torch.device("cuda"), "SPINBOT_TALK_ATTENTION")
    message = str(err.value)
    assert "\n" not in message and "SPINBOT_TALK_ATTENTION=cudnn-fp8" in message and "sm89" in message
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90000)
    assert "cuDNN 9.1" in cudnn_fp8.missing(torch.device("cuda"))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91900)
    monkeypatch.setitem(sys.modules, "cudnn", None)  # the package not installed
    assert "pip install -e '.[gpu]'" in cudnn_fp8.missing(torch.device("cuda"))


def test_the_setting_refuses_an_unknown_kernel_in_one_line(use_settings):
    from spinbot.settings import get_settings

    use_settings(talk_attention="int4")
    with pytest.raises(SettingsError) as err:
        get_settings()
    message = str(err.value)
    assert "\n" not in message and message.startswith("SPINBOT_TALK_ATTENTION='int4' refused")
    assert "'auto', 'sdpa', 'int8', 'fp8' or 'cudnn-fp8'" in message


def test_the_cli_prints_the_refusal_in_one_line_and_fails(use_settings, monkeypatch, capsys):
    from spinbot import cli

    use_settings(talk_attention="int4")
    monkeypatch.setattr(sys, "argv", ["spinbot", "pipelines", "list"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "SPINBOT_TALK_ATTENTION='int4' refused" in lines[0]


@pytest.mark.parametrize("name", ATTENTION_CHOICES)
def test_each_kernel_is_chosen_by_name(name, use_settings):
    from spinbot.settings import get_settings

    use_settings(talk_attention=name)
    attend = select_attention(get_settings().talk_attention, torch.device("cpu"))
    q, k, v = qkv()
    assert relative_error(attend(q, k, v), sdpa_attention(q, k, v)) < 2e-2


# ---- the 8-bit quantization ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("qk_format", ["int8", "fp8"])
def test_quantization_smooths_k_and_v_and_scales_each_block(qk_format):
    q, k, v = qkv(tokens=70)
    x = eight_bit.quantize(q, k, v, qk_format, block=32)
    dtype, top = eight_bit.QK_FORMATS[qk_format]
    assert x.q.dtype == x.k.dtype == dtype and x.vt.dtype == eight_bit.E4M3
    assert x.q.shape == (2, 96, 32) and x.vt.shape == (2, 32, 96) and x.q_scale.shape == (2, 3)
    assert (x.q[:, 70:].float() == 0).all() and (x.vt[:, :, 70:].float() == 0).all()  # padded tokens
    assert (x.q.float().abs().amax(dim=2)[:, :64].unflatten(1, (2, 32)).amax(dim=2) == top).all()  # full range
    # K comes back without its mean over the tokens, V's mean is kept aside
    k_back = (x.k.float() * x.k_scale.repeat_interleave(32, dim=1)[..., None])[:, :70]
    k_smooth = (k - k.mean(dim=1, keepdim=True)).transpose(1, 2).flatten(0, 1)
    assert relative_error(k_back, k_smooth) < (0.01 if qk_format == "int8" else 0.05)
    assert torch.allclose(x.v_mean, v.mean(dim=1).flatten(0, 1))
    v_back = (x.vt.float() * x.v_scale[..., None]).transpose(1, 2)[:, :70]
    assert relative_error(v_back, (v - v.mean(dim=1, keepdim=True)).transpose(1, 2).flatten(0, 1)) < 0.05


@pytest.mark.parametrize("qk_format", ["int8", "fp8"])
def test_the_cpu_emulation_stays_close_to_sdpa_despite_a_large_key_offset(qk_format):
    """A key offset 30x the keys' spread: without smoothing it would take the 8-bit range."""
    q, k, v = qkv(batch=2, tokens=90, heads=3, key_offset=30.0)
    got = eight_bit.attention_8bit(q, k, v, qk_format)
    assert got.shape == q.shape and got.dtype == q.dtype
    assert relative_error(got, sdpa_attention(q, k, v)) < 2e-2


# ---- cuDNN's FP8 attention (its formats emulated on the CPU) --------------------------------------------------------


def test_cudnn_fp8_quantization_pads_smooths_and_scales_per_tensor():
    from spinbot.backends.attention import cudnn_fp8

    q, k, v = qkv(tokens=70)
    x = cudnn_fp8.quantize(q, k, v, multiple=32)
    assert x.q.dtype == x.k.dtype == x.v.dtype == torch.float8_e4m3fn and x.q.shape == (1, 96, 2, 32)
    assert x.tokens == 70 and all((t[:, 70:].float() == 0).all() for t in (x.q, x.k, x.v))  # padded tokens
    assert x.q[:, :70].float().abs().amax() == cudnn_fp8.E4M3_MAX  # the whole e4m3 range, one scale a tensor
    k_smooth = k - k.mean(dim=1, keepdim=True)
    assert relative_error(x.k[:, :70].float() * x.descale_k, k_smooth) < 0.05
    assert torch.allclose(x.v_mean, v.mean(dim=1, keepdim=True))
    assert relative_error(x.v[:, :70].float() / x.scale_o, v - x.v_mean) < 0.05  # scale_o = V's scale: |O| <= |V|


@pytest.mark.parametrize("tokens", [77, 64])
def test_cudnn_fp8_emulation_stays_close_to_sdpa_despite_a_large_key_offset(tokens):
    from spinbot.backends.attention import cudnn_fp8

    q, k, v = qkv(batch=2, tokens=tokens, heads=3, key_offset=30.0)
    got = cudnn_fp8.cudnn_fp8_attention(q, k, v)
    assert got.shape == q.shape and got.dtype == q.dtype
    assert relative_error(got, sdpa_attention(q, k, v)) < 3e-2


def test_cudnn_fp8_emulation_masks_the_padded_keys():
    """Through the custom op with tokens padded as on the GPU: the zero keys past `tokens` get no weight."""
    from spinbot.backends.attention import cudnn_fp8

    q, k, v = qkv(tokens=70, key_offset=0.0)
    x = cudnn_fp8.quantize(q, k, v, multiple=128)
    out = torch.ops.spinbot.attention_cudnn_fp8(x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, 70)
    got = out[:, :70].float() / x.scale_o + x.v_mean
    assert relative_error(got, sdpa_attention(q, k, v)) < 3e-2


@pytest.mark.parametrize("heads_major", [False, True])
def test_cudnn_fp8_runs_under_torch_compile(heads_major):
    """Under torch.compile the op's output must have the layout its fake kernel promises (q's), whether q, k, v are
    [B, L, heads, D] tensors (a model's projections) or views of [B, heads, L, D] ones."""
    from spinbot.backends.attention import cudnn_fp8

    q, k, v = qkv(tokens=70, key_offset=0.0)
    if heads_major:
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    got = torch.compile(cudnn_fp8.cudnn_fp8_attention, fullgraph=True)(q, k, v)
    assert relative_error(got, cudnn_fp8.cudnn_fp8_attention(q, k, v)) < 1e-6
    assert relative_error(got, sdpa_attention(q, k, v)) < 3e-2


def test_a_shape_cudnn_cannot_run_is_refused_in_one_line(monkeypatch):
    from spinbot.backends.attention import cudnn_fp8

    def unsupported(*args):
        raise RuntimeError("[cudnn_frontend] Error: No valid engine configs for SDPA_FP8_FWD\n  at graph.h:123")

    monkeypatch.setattr(cudnn_fp8, "_plan", unsupported)
    x = cudnn_fp8.quantize(*qkv(tokens=40))
    with pytest.raises(BackendUnavailable) as err:
        cudnn_fp8.run_cudnn(x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)
    message = str(err.value)
    assert "\n" not in message and "No valid engine configs" in message and "[1, 40, 2, 32]" in message


# ---- the Triton kernel, in Triton's interpreter -------------------------------------------------------------------

INTERPRETER_CASES = [("int8", 16), ("fp8", 16), ("int8", 32)]  # (Q K^T format, query rows a program)
INTERPRETER_SCRIPT = """
import json, sys
import torch
from spinbot.backends.attention import eight_bit
from spinbot.backends.attention.sdpa import sdpa_attention
from tests.unit.test_attention import INTERPRETER_CASES, qkv, relative_error

q, k, v = qkv(tokens=77)  # 16-token tiles: a partial last tile; 32-token scale blocks: a partial last block
expected = sdpa_attention(q, k, v)
results = {}
for qk_format, rows in INTERPRETER_CASES:
    x = eight_bit.quantize(q, k, v, qk_format, block=32)
    got = eight_bit.launch(x, torch.float32, {"BLOCK_M": rows})
    results[f"{qk_format}-{rows}"] = [relative_error(got, expected), relative_error(got, eight_bit.emulate(x))]
for qk_format in ("int8", "fp8"):  # a whole number of tiles and scale blocks, several heads: nothing padded
    qa, ka, va = qkv(tokens=64, heads=3)
    x = eight_bit.quantize(qa, ka, va, qk_format, block=32)
    got = eight_bit.launch(x, torch.float32, {"BLOCK_M": 16})
    to_sdpa = relative_error(got, sdpa_attention(qa, ka, va))
    results[f"{qk_format}-aligned"] = [to_sdpa, relative_error(got, eight_bit.emulate(x))]
q1, k1, v1 = qkv(tokens=40, heads=1)  # through the custom op, as the model calls it
results["op"] = [relative_error(eight_bit.fp8_attention(q1, k1, v1), sdpa_attention(q1, k1, v1)), 0.0]
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def interpreted() -> dict[str, list[float]]:
    """The kernel run by Triton's interpreter: {case: [error against SDPA, error against the emulation]}."""
    import json

    from tests.support.triton_interpreter import run_interpreted

    return json.loads(run_interpreted(INTERPRETER_SCRIPT))


@pytest.mark.parametrize(("qk_format", "rows"), INTERPRETER_CASES)
def test_the_triton_kernel_matches_sdpa_and_its_emulation(interpreted, qk_format, rows):
    to_sdpa, to_emulation = interpreted[f"{qk_format}-{rows}"]
    assert to_sdpa < 2e-2
    assert to_emulation < 1e-2  # P rounded against the running, not the final, row maximum


@pytest.mark.parametrize("qk_format", ["int8", "fp8"])
def test_the_triton_kernel_is_right_when_nothing_is_padded(interpreted, qk_format):
    """64 tokens, 3 heads: no padded row, so the quantized tensors must still be laid out head-major (an H200 run
    found 3.5% error at 3,072 tokens, and the interpreter 10%, before launch made them dense)."""
    to_sdpa, to_emulation = interpreted[f"{qk_format}-aligned"]
    assert to_sdpa < 2e-2
    assert to_emulation < 1e-2


def test_the_custom_op_runs_the_kernel_under_the_interpreter(interpreted):
    assert interpreted["op"][0] < 2e-2


# ---- the model with each kernel -----------------------------------------------------------------------------------


def tiny_model() -> tuple[InfiniteTalkModel, dict]:
    cfg = InfiniteTalkConfig(
        dim=64,
        ffn_dim=128,
        num_heads=2,
        num_layers=2,
        text_dim=32,
        freq_dim=32,
        intermediate_dim=16,
        output_dim=32,
        context_tokens=4,
    )
    torch.manual_seed(0)
    model = InfiniteTalkModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0.0, 0.1)
            elif "head.head" in name:
                p.normal_(0.0, 0.05)
    frames, h, w = 3, 8, 12
    inputs = {
        "x": torch.randn(1, 16, frames, h, w),
        "t": torch.tensor([700.0]),
        "context": torch.randn(1, 7, 32),
        "clip_fea": torch.randn(1, 257, 1280),
        "y": torch.randn(1, 20, frames, h, w),
        "audio": torch.randn(1, 9, 5, 12, 768),
    }
    return model, inputs


def test_conditions_made_once_give_the_same_forward():
    model, inputs = tiny_model()
    with torch.inference_mode():
        expected = model(**inputs)
        conditions = model.conditions(
            inputs["context"], inputs["clip_fea"], inputs["audio"], model.token_grid(inputs["x"].shape)
        )
        got = model(inputs["x"], inputs["t"], None, None, inputs["y"], None, conditions=conditions)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["int8", "fp8", "cudnn-fp8"])
@pytest.mark.parametrize("fp8_linears", [False, True])
def test_the_model_runs_with_8bit_attention_and_fp8_linears(name, fp8_linears):
    from spinbot.backends.fp8 import INFINITETALK_LINEARS, use_fp8

    model, inputs = tiny_model()
    with torch.inference_mode():
        expected = model(**inputs)
        if fp8_linears:
            use_fp8(model.blocks, INFINITETALK_LINEARS)
        model.use_attention(select_attention(name, torch.device("cpu")))
        got = model(**inputs)
    assert all(block.self_attn.attend is select_attention(name, torch.device("cpu")) for block in model.blocks)
    assert relative_error(got, expected) < (0.08 if fp8_linears else 0.03)


def test_the_autotuner_keeps_only_configurations_that_compile(monkeypatch):
    """The first pass of the GPU autotuner (its timing runs need a GPU): a configuration whose compile fails is
    dropped, the launch's own grid is not passed on, and none compiling is a clear error."""
    require_module("triton")
    from spinbot.backends.attention import eight_bit_kernel as kernels

    calls = []

    class Kernel:
        @staticmethod
        def warmup(**kwargs):
            calls.append(kwargs)
            if kwargs["BLOCK_M"] == 64:  # as if one warpgroup's tiles failed to lower
                raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(kernels, "attention_8bit_kernel", Kernel)
    kept = kernels.compiling_configs(
        kernels.GPU_CONFIGS, {"Q": "q"}, grid=lambda meta: (1,), warmup=False, HEAD_DIM=128
    )
    failing = [c for c in kernels.GPU_CONFIGS if c.kwargs["BLOCK_M"] == 64]
    assert failing and kept and all(c.kwargs["BLOCK_M"] != 64 for c in kept)
    assert len(kept) == len(kernels.GPU_CONFIGS) - len(failing)
    assert all(call["grid"] == (1,) and call["Q"] == "q" and call["HEAD_DIM"] == 128 for call in calls)
    with pytest.raises(RuntimeError, match="no kernel configuration compiles"):
        kernels.compiling_configs(failing, {}, HEAD_DIM=128)


def test_hopper_runs_the_measured_configuration_and_other_gpus_the_autotuner():
    require_module("triton")
    from spinbot.backends.attention import eight_bit_kernel as kernels

    pinned = kernels.pinned_config((9, 0))
    assert pinned == kernels.HOPPER_CONFIG and pinned["BLOCK_N"] <= eight_bit.SCALE_BLOCK
    assert any(c.all_kwargs().items() >= pinned.items() for c in kernels.GPU_CONFIGS)  # one of those measured
    assert kernels.pinned_config((8, 9)) is None and kernels.pinned_config((10, 0)) is None


def test_run_cudnn_refuses_real_counts_outside_its_tensors_before_any_kernel():
    from spinbot.backends.attention import cudnn_fp8

    q, k = torch.zeros(1, 8, 2, 16), torch.zeros(1, 16, 2, 16)  # CPU tensors: the check comes before cuDNN
    scale = torch.ones(1, 1, 1, 1)
    for tokens, q_tokens in ((16, 0), (16, 9), (17, 8), (0, 8)):
        with pytest.raises(ValueError, match="real queries"):
            cudnn_fp8.run_cudnn(q, k, k, scale, scale, scale, scale, tokens, q_tokens=q_tokens)
