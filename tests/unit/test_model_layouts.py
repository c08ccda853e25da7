"""The seed files' key layouts the loaders accept, each built small from that layout, and the full-size writer's files
against the published sizes of the real ones.

Layouts: a Wan file under ComfyUI's `model.diffusion_model.` prefix beside Kijai's unprefixed adapter; fp8 and
scaled-fp8 weights (Kijai's `_fp8_scaled` files); RealESRGAN under `params`, `params_ema` or bare; a
Wav2Vec2ForPreTraining checkpoint (`wav2vec2.` prefix, old weight-norm names, pre-training heads).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")

from safetensors.torch import load_file, save_file

from spinbot.backends.talk.infinitetalk.loading import file_prefixes, transformer_config
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import load_model
from spinbot.models.layouts.infinitetalk import transformer_problems, wav2vec_problems
from spinbot.models.layouts.upscale import upscaler_problems
from spinbot.models.synth.talk import FULL, TINY, _meta_transformer, transformer_entries, write_wav2vec
from spinbot.models.synth.tensors import planned_size, write_safetensors

PUBLISHED = {  # bytes, from the Hub's LFS pointers (spinbot/models/manifest.py)
    "wan2.1_i2v_720p_14B_bf16": 32789894024,
    "InfiniteTalk single fp16": 5125258232,
    "umt5-xxl-enc-bf16": 11361845464,
    "clip_vision_h": 1264219396,
}


@pytest.fixture(scope="module")
def tiny_transformer(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny Wan file and adapter file, unprefixed, in the real dtypes."""
    folder = tmp_path_factory.mktemp("transformer")
    wan, talk = transformer_entries(_meta_transformer(TINY.transformer))
    return write_safetensors(folder / "wan.safetensors", wan), write_safetensors(folder / "talk.safetensors", talk)


def test_a_prefixed_wan_file_loads_beside_an_unprefixed_adapter(tiny_transformer, tmp_path):
    wan, talk = tiny_transformer
    prefixed = tmp_path / "wan.safetensors"
    state = {f"model.diffusion_model.{k}": v for k, v in load_file(str(wan)).items()}
    state["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)  # ComfyUI's marker stays outside the prefix
    save_file(state, str(prefixed))
    paths = [prefixed, talk]

    assert file_prefixes(paths) == ["model.diffusion_model.", ""]
    model = load_model(paths, transformer_config(paths, file_prefixes(paths)), prefix=file_prefixes(paths))
    reference = load_model([wan, talk], transformer_config([wan, talk]))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert transformer_problems(prefixed, talk, None) == []


def test_fp8_and_scaled_fp8_weights_are_read_as_weight_times_scale(tiny_transformer, tmp_path):
    wan, talk = tiny_transformer
    state = load_file(str(wan))
    scaled, plain = "blocks.0.self_attn.q.weight", "blocks.1.ffn.0.weight"
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in state.items() if k in (scaled, plain)}
    scale = torch.tensor([0.5])
    state.update(fp8)
    state[scaled.replace(".weight", ".scale_weight")] = scale
    state["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)  # the scaled files' marker
    quantized = tmp_path / "wan_fp8_scaled.safetensors"
    save_file(state, str(quantized))

    paths = [quantized, talk]
    model = load_model(paths, transformer_config(paths), dtype="float32")
    params = model.state_dict()
    assert torch.equal(params[scaled], fp8[scaled].float() * 0.5)
    assert torch.equal(params[plain], fp8[plain].float())
    assert transformer_problems(quantized, talk, None) == []


@pytest.mark.parametrize("wrapper", ["params", "params_ema", None])
def test_realesrgan_loads_under_each_released_wrapper(tmp_path, wrapper):
    from spinbot.backends.upscale.model_loading import load_upscaler
    from spinbot.models.synth.upscale import realesrgan_state_dict

    state = realesrgan_state_dict(num_feat=16, num_block=2)["params_ema"]
    path = tmp_path / "RealESRGAN_x2.pth"
    torch.save({wrapper: state} if wrapper else state, path)
    descriptor, _ = load_upscaler(path, torch.device("cpu"), half=False)
    assert descriptor.scale == 2
    assert upscaler_problems(path) == []


def test_a_wav2vec2_pretraining_checkpoint_loads_as_the_encoder(tmp_path):
    from spinbot.backends.talk.infinitetalk.audio import load_audio_encoder

    folder = tmp_path / "chinese-wav2vec2-base"
    write_wav2vec(folder, TINY.wav2vec, seed=0)
    keys = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in keys and "quantizer.codevectors" in keys
    encoder = load_audio_encoder(folder)
    loaded = encoder.model.state_dict()
    assert torch.equal(
        loaded["encoder.layers.0.attention.q_proj.weight"], keys["wav2vec2.encoder.layers.0.attention.q_proj.weight"]
    )
    assert wav2vec_problems(folder) == []


def test_full_size_files_have_the_published_sizes():
    """A safetensors file's size is its header plus its tensors, so equal sizes mean the same keys, shapes and
    dtypes (up to the header's metadata, which the real files carry and these do not all)."""
    from spinbot.models.synth.talk import clip_entries, umt5_entries

    wan, adapter = transformer_entries(_meta_transformer(FULL.transformer))
    assert planned_size(wan) == PUBLISHED["wan2.1_i2v_720p_14B_bf16"]
    assert planned_size(umt5_entries(FULL.umt5), {"format": "pt"}) == PUBLISHED["umt5-xxl-enc-bf16"]
    assert 0 <= PUBLISHED["InfiniteTalk single fp16"] - planned_size(adapter) <= 72
    assert 0 <= PUBLISHED["clip_vision_h"] - planned_size(clip_entries(FULL.clip)) <= 32


def test_a_cut_file_is_reported_before_the_rest_of_its_group_is_there(tiny_transformer, tmp_path):
    """The transformer's layout is checked once its three files are present; until then each present safetensors
    file's header is still read, so a cut download is reported at once (the LoRA here is missing)."""
    import shutil

    from spinbot.models.layouts import infinitetalk
    from spinbot.models.selection import task_params

    params = task_params("infinite_talk", {})
    paths = {f.param: f.path for f in infinitetalk.files(params, tmp_path)}
    wan, talk = tiny_transformer
    for param, source in (("wan_video_model", wan), ("infinitetalk_model", talk)):
        paths[param].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, paths[param])
    with paths["infinitetalk_model"].open("r+b") as cut:
        cut.truncate(paths["infinitetalk_model"].stat().st_size // 2)

    problems = {p.path: p.message for p in infinitetalk.check(params, tmp_path)}
    assert problems[paths["lora_model"]] == "missing (lora_model)"
    assert problems[paths["infinitetalk_model"]].startswith("not a readable safetensors file")
    assert paths["wan_video_model"] not in problems  # whole and readable: its layout waits for the group


def test_a_corrupt_f5_checkpoint_is_reported_while_its_vocabulary_is_missing(tmp_path):
    from spinbot.models.layouts import f5tts
    from spinbot.models.selection import task_params

    params = task_params("f5_to_tts", {})
    checkpoint = next(f.path for f in f5tts.files(params, tmp_path) if f.param == "model")
    assert checkpoint.suffix == ".safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + bytes(64))

    problems = {p.path: p.message for p in f5tts.check(params, tmp_path)}
    assert problems[checkpoint].startswith("not a readable safetensors file")
    assert any(message.startswith("missing (") for message in problems.values())  # the vocabulary, the vocoder
