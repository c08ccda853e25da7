"""The native InfiniteTalk transformer against the official model's forward pass.

`shared/reference/infinitetalk/forward-small.safetensors` (beside the repository in CI) holds the official
`WanModel` (MeiGen-AI/InfiniteTalk) in a small configuration with random weights under the official key names, its
inputs and its float32 output; see the README there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs torch: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")

from safetensors import safe_open
from safetensors.torch import save_file

from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError, load_model

REFERENCE_NAME = Path("shared/reference/infinitetalk/forward-small.safetensors")
FLOAT32_BOUND = 1e-4
BFLOAT16_BOUND = 2e-2  # measured 5.6e-3 on the CPU (torch 2.13)


def reference_path() -> Path:
    beside_repo = Path(__file__).resolve().parents[2].parent / REFERENCE_NAME
    for path in (beside_repo, Path("/work") / REFERENCE_NAME):
        if path.is_file():
            return path
    message = f"the InfiniteTalk reference forward pass is missing: {beside_repo}"
    pytest.fail(message) if in_ci() else pytest.skip(message)


@pytest.fixture(scope="module")
def reference() -> dict:
    path = reference_path()
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return {
        "path": path,
        "config": InfiniteTalkConfig.from_dict(json.loads(metadata["config"])),
        "seq_len": int(metadata["seq_len"]),
        "inputs": {key[3:]: value for key, value in tensors.items() if key.startswith("in.")},
        "weights": {key[8:]: value for key, value in tensors.items() if key.startswith("weights.")},
        "out": tensors["out.x"],
    }


def run_forward(reference: dict, dtype: torch.dtype) -> torch.Tensor:
    model = load_model([reference["path"]], reference["config"], dtype=dtype, prefix="weights.")
    i = reference["inputs"]
    # The official inputs are unbatched lists (one sample) and one speaker; ref_target_masks (one speaker, all ones)
    # only weighs speakers against each other, so the model takes no masks.
    assert i["ref_target_masks"].shape[0] == 1 and bool((i["ref_target_masks"] == 1).all())
    with torch.no_grad():
        out = model(i["x"][None], i["t"], i["context"][None], i["clip_fea"], i["y"][None], i["audio"])
    assert out.dtype == torch.float32 and out.shape == reference["out"].shape
    tokens = out.shape[2] * out.shape[3] * out.shape[4] // 4
    assert tokens == reference["seq_len"]  # no padding to seq_len involved
    return out


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def test_float32_forward_matches_official(reference: dict) -> None:
    error = relative_error(run_forward(reference, torch.float32), reference["out"])
    print(f"InfiniteTalk float32 relative error: {error:.3e}")
    assert error < FLOAT32_BOUND


def test_bfloat16_forward_is_close(reference: dict) -> None:
    error = relative_error(run_forward(reference, torch.bfloat16), reference["out"])
    print(f"InfiniteTalk bfloat16 relative error: {error:.3e}")
    assert error < BFLOAT16_BOUND


def test_bfloat16_keeps_sensitive_params_in_float32(reference: dict) -> None:
    model = load_model([reference["path"]], reference["config"], dtype="bfloat16", prefix="weights.")
    params = dict(model.named_parameters())
    assert params["blocks.0.self_attn.q.weight"].dtype == torch.bfloat16
    assert params["audio_proj.proj1.weight"].dtype == torch.bfloat16
    for name in (
        "blocks.0.modulation",
        "blocks.0.self_attn.norm_q.weight",
        "head.head.weight",
        "time_projection.1.weight",
        "img_emb.proj.0.weight",
        "audio_proj.norm.weight",
    ):
        assert params[name].dtype == torch.float32, name
    assert not any(p.requires_grad for p in params.values())


def test_audio_changes_the_output(reference: dict) -> None:
    """The audio path is live: silence moves the output far beyond the float32 bound (by 7e-3)."""
    model = load_model([reference["path"]], reference["config"], prefix="weights.")
    i = reference["inputs"]
    with torch.no_grad():
        out = model(i["x"][None], i["t"], i["context"][None], i["clip_fea"], i["y"][None], torch.zeros_like(i["audio"]))
    error = relative_error(out, reference["out"])
    assert error > 10 * FLOAT32_BOUND


def test_audio_scale_weighs_the_audio_path(reference: dict) -> None:
    """audio_scale multiplies every block's audio cross-attention output: at 0 the audio no longer matters."""
    model = load_model([reference["path"]], reference["config"], prefix="weights.")
    i = reference["inputs"]

    def forward(audio: torch.Tensor, scale: float) -> torch.Tensor:
        with torch.no_grad():
            return model(i["x"][None], i["t"], i["context"][None], i["clip_fea"], i["y"][None], audio, scale)

    silence = torch.zeros_like(i["audio"])
    assert relative_error(forward(i["audio"], 1.0), reference["out"]) < FLOAT32_BOUND
    assert torch.allclose(forward(i["audio"], 0.0), forward(silence, 0.0), atol=1e-6)
    assert relative_error(forward(i["audio"], 1.6), reference["out"]) > 10 * FLOAT32_BOUND


def test_missing_key_is_named(reference: dict, tmp_path: Path) -> None:
    weights = dict(reference["weights"])
    del weights["blocks.1.audio_cross_attn.kv_linear.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_model([tmp_path / "model.safetensors"], reference["config"])
    message = str(err.value)
    assert "missing 'blocks.1.audio_cross_attn.kv_linear.weight'" in message and "\n" not in message


def test_split_checkpoint_loads_and_extra_key_is_named(reference: dict, tmp_path: Path) -> None:
    """The Wan file and the InfiniteTalk file together make the model; a key the model lacks is named."""
    audio_keys = {
        k for k in reference["weights"] if k.startswith("audio_proj.") or ".audio_cross_attn." in k or ".norm_x." in k
    }
    save_file({k: v for k, v in reference["weights"].items() if k not in audio_keys}, str(tmp_path / "wan.safetensors"))
    save_file({k: reference["weights"][k] for k in audio_keys}, str(tmp_path / "talk.safetensors"))
    load_model([tmp_path / "wan.safetensors", tmp_path / "talk.safetensors"], reference["config"])
    with pytest.raises(CheckpointError, match=r"missing 'audio_proj\.norm\.bias' and"):
        load_model([tmp_path / "wan.safetensors"], reference["config"])
    extra = {"blocks.2.self_attn.q.weight": torch.zeros(1)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected key 'blocks.2.self_attn.q.weight' \(in extra"):
        load_model(
            [tmp_path / "wan.safetensors", tmp_path / "talk.safetensors", tmp_path / "extra.safetensors"],
            reference["config"],
        )


def test_config_from_official_config_json() -> None:
    official = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "dim": 5120,
        "eps": 1e-06,
        "ffn_dim": 13824,
        "freq_dim": 256,
        "in_dim": 36,
        "model_type": "i2v",
        "num_heads": 40,
        "num_layers": 40,
        "out_dim": 16,
        "text_len": 512,
    }
    assert InfiniteTalkConfig.from_dict(official) == InfiniteTalkConfig()
    with pytest.raises(ValueError, match="unknown InfiniteTalk config key 'dims'"):
        InfiniteTalkConfig.from_dict({"dims": 5120})


def test_unreadable_checkpoint_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    for path in (bad, tmp_path / "absent.safetensors"):
        with pytest.raises(CheckpointError) as err:
            load_model([path], InfiniteTalkConfig(num_layers=1))
        assert "\n" not in str(err.value) and path.name in str(err.value)
