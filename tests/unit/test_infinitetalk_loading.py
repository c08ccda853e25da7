"""The native infinite_talk backend's loading on tiny models (CPU, CI): LoRA merges, the VAE's and wav2vec2's files,
the transformer's config and attention, the dtypes chosen per device. The render itself is tested in
test_infinitetalk_backend.py; the models and fixtures are in tests/support/infinitetalk_models.py."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")


from spinbot.backends.talk.infinitetalk.lora import merge_lora
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.backends.talk.infinitetalk.vae import wan_name
from tests.support import infinitetalk_models
from tests.support.infinitetalk_models import DEFAULTS, LORA_TARGETS, TINY, lora_tensors, random_transformer, save

models_dir = infinitetalk_models.models_dir  # the shared module's fixture, bound here so that pytest finds it


# ---- LoRA ---------------------------------------------------------------------------------------------------------


def test_lora_merge_changes_exactly_the_targeted_weights(tmp_path):
    model = random_transformer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = lora_tensors()
    save(tmp_path / "lora.safetensors", lora)
    report = merge_lora(model, tmp_path / "lora.safetensors", strength=0.7)
    assert report.tensors == 4

    expected = dict(before)
    for module in LORA_TARGETS:
        up, down = lora[f"diffusion_model.{module}.lora_up.weight"], lora[f"diffusion_model.{module}.lora_down.weight"]
        alpha, rank = float(lora[f"diffusion_model.{module}.alpha"]), down.shape[0]
        expected[f"{module}.weight"] = before[f"{module}.weight"] + (up @ down) * (alpha / rank) * 0.7
    expected["blocks.0.cross_attn.o.bias"] = (
        before["blocks.0.cross_attn.o.bias"] + lora["diffusion_model.blocks.0.cross_attn.o.diff_b"] * 0.7
    )
    expected["blocks.1.modulation"] = before["blocks.1.modulation"] + lora["diffusion_model.blocks.1.diff_m"] * 0.7
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {f"{m}.weight" for m in LORA_TARGETS} | {"blocks.0.cross_attn.o.bias", "blocks.1.modulation"}
    for key in after:
        assert torch.equal(after[key], expected[key]), key


def test_a_lora_key_for_another_model_is_named_and_nothing_changes(tmp_path):
    model = random_transformer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = lora_tensors() | {
        "diffusion_model.blocks.7.self_attn.k.lora_down.weight": torch.zeros(4, 256),
        "diffusion_model.blocks.7.self_attn.k.lora_up.weight": torch.zeros(256, 4),
    }
    save(tmp_path / "lora.safetensors", lora)
    with pytest.raises(
        CheckpointError,
        match=r"'diffusion_model.blocks.7.self_attn.k.lora_\w+.weight' targets "
        r"'blocks.7.self_attn.k.weight', which the model does not have",
    ):
        merge_lora(model, tmp_path / "lora.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---- VAE names, loading -----------------------------------------------------------------------------------------


def test_vae_names_invert_diffusers_converter_at_full_size():
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    with torch.device("meta"):
        keys = list(AutoencoderKLWan().state_dict())
    official = {wan_name(k): k for k in keys}
    assert len(official) == len(keys) and "decoder.upsamples.4.shortcut.weight" in official
    assert convert_wan_vae_to_diffusers(official) == {k: k for k in keys}


def test_tiny_config_is_read_from_the_checkpoints(models_dir):
    from spinbot.backends.talk.infinitetalk.loading import transformer_config

    paths = [
        models_dir / "diffusion_models" / DEFAULTS.wan_video_model,
        models_dir / "diffusion_models" / DEFAULTS.infinitetalk_model,
    ]
    assert transformer_config(paths) == TINY
    assert math.prod(TINY.patch_size) == 4


@pytest.mark.parametrize("attention", ["sdpa", "int8"])
def test_the_attention_setting_reaches_every_block_at_load(models_dir, attention):
    from spinbot.backends.attention import select_attention
    from spinbot.backends.talk.infinitetalk.loading import Precision, load_transformer, resolve_files

    files = resolve_files(DEFAULTS, models_dir)
    precision = Precision.for_device(torch.device("cpu"), attention=attention, fast_vae=True)
    model, _ = load_transformer(files, precision, 1.0)
    kernel = select_attention(attention, torch.device("cpu"))
    assert all(block.self_attn.attend is kernel for block in model.blocks)
    assert not precision.fast_vae  # the VAE's GPU layout and compiled norms are for CUDA only


def test_wav2vec2_without_a_preprocessor_file_uses_the_official_values(models_dir, tmp_path):
    """Never transformers' default (do_normalize True): chinese-wav2vec2-base's file says false."""
    from spinbot.backends.talk.infinitetalk.audio import load_audio_encoder

    folder = tmp_path / "wav2vec2"
    shutil.copytree(models_dir / "wav2vec2" / DEFAULTS.wav2vec_model, folder)
    (folder / "preprocessor_config.json").unlink()
    encoder = load_audio_encoder(folder)
    assert encoder.normalizes is False
    speech = (0.3 + 0.1 * np.sin(np.arange(1600) / 7)).astype(np.float32)  # an offset the normalization would remove
    values = encoder.feature_extractor(speech, sampling_rate=16000, return_tensors="pt").input_values[0]
    assert torch.equal(values, torch.from_numpy(speech))


def test_the_vae_dtype_setting_takes_bfloat16_on_cuda_only(use_settings):
    from spinbot.backends.talk.infinitetalk.loading import Precision
    from spinbot.errors import SettingsError
    from spinbot.settings import get_settings

    use_settings(talk_vae_dtype="bfloat16")
    chosen = get_settings().talk_vae_dtype
    assert Precision.for_device(torch.device("cuda"), vae_dtype=chosen).vae == torch.bfloat16
    assert Precision.for_device(torch.device("cpu"), vae_dtype=chosen).vae == torch.float32  # CPU bf16 is slow
    use_settings(talk_vae_dtype="float16")
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert "\n" not in str(err.value) and "SPINBOT_TALK_VAE_DTYPE='float16' refused" in str(err.value)


def test_the_vae_runs_in_float32_on_cuda_as_the_official_pipeline():
    from spinbot.backends.talk.infinitetalk.loading import Precision

    cuda = Precision.for_device(torch.device("cuda"))
    assert (cuda.transformer, cuda.encoders, cuda.vae, cuda.audio) == (
        torch.bfloat16,
        torch.bfloat16,
        torch.float32,
        torch.float32,
    )


def test_loading_the_official_wav2vec2_folder_prints_no_third_party_report(models_dir, capfd):
    # every load printed transformers' "Wav2Vec2Model LOAD REPORT" (the pre-training heads as UNEXPECTED, "not ok if
    # you expect identical arch") and a "Loading weights" bar among the job's progress lines
    from spinbot.backends.talk.infinitetalk.audio import load_audio_encoder

    encoder = load_audio_encoder(models_dir / "wav2vec2" / DEFAULTS.wav2vec_model)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "UNEXPECTED" not in out + err and "Loading weights" not in out + err
    assert encoder.model.config.num_hidden_layers >= 1


def test_a_read_only_portrait_array_is_converted_without_a_warning():
    import warnings

    from spinbot.backends.talk.infinitetalk.pipeline import to_unit_range

    image = np.full((4, 6, 3), 255, dtype=np.uint8)
    image.flags.writeable = False  # as frames decoded into a read-only buffer come
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: UserWarning "The given NumPy array is not writable"
        tensor = to_unit_range(image, torch.device("cpu"))
    assert tensor.shape == (1, 3, 4, 6) and float(tensor.max()) == 1.0
