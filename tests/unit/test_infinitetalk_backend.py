"""The native infinite_talk backend end to end on tiny models (CPU, CI).

Every model is the real architecture (same module classes, same key names) at tiny sizes with random weights, saved
in the official file formats under the default names of InfiniteTalkParams in a temporary SPINBOT_MODELS_DIR:
the transformer split into the Wan file and the InfiniteTalk file (official names), a lightx2v-format LoRA, the Wan
VAE (original Wan names), UMT5 (Wan's names) with a tokenizer.json, CLIP vision (ComfyUI / transformers names) and a
wav2vec2 transformers folder. Sizes the model code fixes stay real: CLIP's width (1280) and wav2vec2's 12 x 768
features, which the audio projection consumes.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")

import cv2
from safetensors.torch import save_file

from spinbot.backends.talk.infinitetalk.audio import OFFICIAL_PREPROCESSOR, audio_windows
from spinbot.backends.talk.infinitetalk.lora import merge_lora
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.sampler import FlowSampler, Guidance, denoise, shifted, sigma_schedule
from spinbot.backends.talk.infinitetalk.t5 import hf_to_wan
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.backends.talk.infinitetalk.vae import load_vae, wan_name
from spinbot.errors import BackendUnavailable
from spinbot.media.audio import write_wav
from spinbot.media.video import iter_frames
from spinbot.tasks.talk import InfiniteTalkParams
from tests.support.tasks import run_talk

DEFAULTS = InfiniteTalkParams()
TINY = InfiniteTalkConfig(
    dim=256,
    num_heads=2,
    num_layers=2,
    ffn_dim=64,
    freq_dim=32,
    text_dim=32,
    intermediate_dim=16,
    output_dim=32,
    context_tokens=4,
)
AUDIO_KEYS = ("audio_proj.", ".audio_cross_attn.", ".norm_x.")
LORA_TARGETS = ("blocks.0.self_attn.q", "blocks.1.ffn.0")
RUN = {"frame_window_size": 13, "motion_frame": 5, "sampling_steps": 2, "audio_cfg_scale": 2.0}
TINY_BUCKETS = {"0.50": (32, 64), "1.00": (64, 64), "2.00": (64, 32)}  # (height, width), as the official tables


# ---- tiny models in the official formats -------------------------------------------------------------------------


def random_transformer(seed: int = 0) -> InfiniteTalkModel:
    torch.manual_seed(seed)
    model = InfiniteTalkModel(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)  # modulations too (zero at construction), so every path is live
    return model.eval()


def lora_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {}
    for module, (out_dim, in_dim) in zip(LORA_TARGETS, ((256, 256), (64, 256))):
        state[f"diffusion_model.{module}.lora_down.weight"] = torch.randn(4, in_dim, generator=g) * 0.1
        state[f"diffusion_model.{module}.lora_up.weight"] = torch.randn(out_dim, 4, generator=g) * 0.1
        state[f"diffusion_model.{module}.alpha"] = torch.tensor(2.0)
    state["diffusion_model.blocks.0.cross_attn.o.diff_b"] = torch.randn(256, generator=g) * 0.1
    state["diffusion_model.blocks.1.diff_m"] = torch.randn(1, 6, 256, generator=g) * 0.1
    return state


def write_transformer(models: Path, model: InfiniteTalkModel) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    talk = {k: v for k, v in state.items() if any(part in k for part in AUDIO_KEYS)}
    save(models / "diffusion_models" / DEFAULTS.wan_video_model, {k: v for k, v in state.items() if k not in talk})
    save(models / "diffusion_models" / DEFAULTS.infinitetalk_model, {k: v.half() for k, v in talk.items()})
    save(models / "loras" / DEFAULTS.lora_model, lora_tensors())


def write_vae(models: Path) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(2)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16)
    save(models / "vae" / DEFAULTS.vae_model, {wan_name(k): v.bfloat16() for k, v in vae.state_dict().items()})


def write_umt5(models: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers import models as tok_models
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(3)
    config = UMT5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
    )
    state = UMT5EncoderModel(config).state_dict()
    path = models / "text_encoders" / DEFAULTS.t5_text_encoder_model
    save(path, {hf_to_wan(k): v.bfloat16() for k, v in state.items() if k != "encoder.embed_tokens.weight"})
    words = [
        "a",
        "man",
        "is",
        "talking",
        "to",
        "the",
        "camera",
        "natural",
        "facial",
        "expressions",
        "clear",
        "lip",
        "movement",
        "blurry",
        "static",
    ]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tokenizer = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer.save(str(path.parent / "tokenizer.json"))


def write_clip(models: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(4)
    config = CLIPVisionConfig(
        hidden_size=1280,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=16,
        image_size=28,
        patch_size=14,
    )
    state = {
        f"vision_model.{k.removeprefix('vision_model.')}": v.bfloat16()
        for k, v in CLIPVisionModel(config).state_dict().items()
    }
    state["visual_projection.weight"] = torch.zeros(1024, 1280, dtype=torch.bfloat16)  # in the file, unused
    save(models / "clip_vision" / DEFAULTS.clip_vision_model, state)


def write_wav2vec(models: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(5)
    config = Wav2Vec2Config(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=32,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    folder = models / "wav2vec2" / DEFAULTS.wav2vec_model
    Wav2Vec2Model(config).half().save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(**OFFICIAL_PREPROCESSOR).save_pretrained(str(folder))


def save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_transformer(models, random_transformer())
    write_vae(models)
    write_umt5(models)
    write_clip(models)
    write_wav2vec(models)
    return models


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A 64x64 portrait and 1.2 s of voiced sound between short silences."""
    folder = tmp_path_factory.mktemp("inputs")
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, 255 - xx * 2], axis=-1).astype(np.uint8)
    cv2.circle(image, (32, 30), 14, (220, 180, 150), -1)
    cv2.imwrite(str(folder / "portrait.png"), image[..., ::-1])
    sr = 16000
    t = np.arange(int(1.2 * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    audio = np.concatenate([np.zeros(3200), 0.2 * voice, np.zeros(3200)]).astype(np.float32)
    return folder / "portrait.png", write_wav(folder / "speech.wav", audio, sr)


@pytest.fixture
def native(models_dir: Path, use_settings, spinbot_env, monkeypatch) -> Path:
    from spinbot.backends.talk.infinitetalk.sizing import BUCKETS

    use_settings(models_dir=models_dir, talk_backend="native")
    monkeypatch.setitem(BUCKETS, "480p", TINY_BUCKETS)  # the official rule at a size the CPU renders in seconds
    return models_dir


# ---- the task through the backend --------------------------------------------------------------------------------


def test_task_generates_a_multi_window_video_with_one_frame_per_frame_of_speech(native, inputs, tmp_path):
    out, video = run_talk(tmp_path, *inputs, **RUN)
    crop = out.meta["steps"][0]
    expected = round((crop["end_s"] - crop["start_s"]) * 25)
    frames = list(iter_frames(video))
    assert len(frames) == expected and frames[0].shape == (64, 64, 3)
    assert out.meta["backend"] == "native" and out.meta["ignored_params"] == {}
    from spinbot.tasks.windows import plan_windows

    plan = plan_windows(expected, RUN["frame_window_size"], RUN["motion_frame"])
    assert out.meta["windows"]["count"] == len(plan) == 4
    assert out.meta["guidance"]["passes_per_step"] == ["cond", "no_audio"]  # text scale 1, audio scale 2
    assert out.meta["lora"] == {"file": Path(DEFAULTS.lora_model).name, "strength": 1.0, "tensors": 4}
    assert out.meta["frames_per_window"] == 13 and out.meta["shift"] == DEFAULTS.sampling_shift == 11.0
    assert out.meta["wav2vec2_normalizes_waveform"] is False  # the official preprocessor_config.json
    assert out.meta["steps"][4] == {
        "step": "image_resize",
        "from": [64, 64],
        "to": [64, 64],
        "rule": "480p bucket 64x64 (official InfiniteTalk sizes)",
    }
    assert len(out.meta["seconds_per_window"]) == out.meta["windows"]["count"]


def test_same_seed_same_frames_and_windows_follow_the_vae_stride(native, inputs):
    """frame_window_size 12 is not 1 + 4k: windows generate 13 frames, keep the plan's, and warn."""
    from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
    from spinbot.tasks.talk import prepare_image, prepare_speech
    from spinbot.tasks.windows import plan_windows

    params = InfiniteTalkParams(**(RUN | {"frame_window_size": 12, "motion_frame": 4, "sampling_scheduler": "unipc"}))
    speech, _, _ = prepare_speech(inputs[1], params)
    backend = NativeTalkBackend()
    image, _ = prepare_image(inputs[0], backend, params)
    windows = plan_windows(speech.frames, params.frame_window_size, params.motion_frame)
    assert len(windows) >= 2

    def generate() -> tuple[np.ndarray, dict]:
        backend = NativeTalkBackend()
        state = backend.prepare(image, speech, params)
        frames = []
        for window in windows:
            new = list(backend.render_window(state, window))
            assert len(new) == len(window.new_frames)
            frames += new
        return np.stack(frames), backend.describe(state)

    first, described = generate()
    second, _ = generate()
    assert first.shape == (speech.frames, 64, 64, 3)
    assert np.array_equal(first, second)
    assert described["frames_per_window"] == 13
    assert any("frame_window_size 12 is not 1 + 4k" in w for w in described["warnings"])
    assert any("motion_frame 4 is not 1 + 4k" in w for w in described["warnings"])


def test_a_key_missing_from_a_checkpoint_is_named(native, inputs, tmp_path, use_settings):
    from safetensors.torch import load_file

    broken = tmp_path / "models"
    shutil.copytree(native, broken, symlinks=True)
    talk = broken / "diffusion_models" / DEFAULTS.infinitetalk_model
    state = load_file(str(talk))
    del state["blocks.1.audio_cross_attn.kv_linear.weight"]
    save(talk, state)
    use_settings(models_dir=broken)
    with pytest.raises(CheckpointError) as err:
        run_talk(tmp_path, *inputs, **RUN)
    assert "missing 'blocks.1.audio_cross_attn.kv_linear.weight'" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_key_missing_from_the_vae_is_named_as_the_file_names_it(models_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(models_dir / "vae" / DEFAULTS.vae_model))
    del state["decoder.upsamples.4.shortcut.weight"]
    save(tmp_path / "vae.safetensors", state)
    with pytest.raises(CheckpointError, match=r"vae.safetensors is missing 'decoder.upsamples.4.shortcut.weight'$"):
        load_vae(tmp_path / "vae.safetensors")


def test_a_missing_file_is_named_with_its_folder(native, inputs, tmp_path, use_settings):
    partial = tmp_path / "models"
    shutil.copytree(native, partial, symlinks=True)
    (partial / "clip_vision" / DEFAULTS.clip_vision_model).unlink()
    use_settings(models_dir=partial)
    with pytest.raises(BackendUnavailable) as err:
        run_talk(tmp_path, *inputs, **RUN)
    message = str(err.value)
    expected = partial / "clip_vision" / DEFAULTS.clip_vision_model
    assert f"clip_vision_model file {DEFAULTS.clip_vision_model} not found: looked for {expected}" in message
    assert "\n" not in message


def test_a_render_stopped_at_a_window_resumes_with_the_frames_of_one_that_never_stopped(
    native, inputs, tmp_path, monkeypatch
):
    """The checkpoint after each window holds the next window's motion latents and the generator's state
    (continuation.py): the resumed windows are sampled from the same noise and context as uninterrupted ones."""
    from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
    from tests.support.renders import watch_renders

    seen = watch_renders(monkeypatch, NativeTalkBackend)
    _, whole_video = run_talk(tmp_path / "whole", *inputs, **RUN)
    assert seen["calls"] == [0, 1, 2, 3]
    seen["calls"], seen["fail_at"] = [], 2
    with pytest.raises(RuntimeError, match="the render stopped at window 2"):
        run_talk(tmp_path / "resumed", *inputs, **RUN)
    seen["calls"] = []
    out, video = run_talk(tmp_path / "resumed", *inputs, **RUN)
    assert seen["calls"] == [2, 3] and out.meta["resumed_from_window"] == 2
    assert len(out.meta["seconds_per_window"]) == 4  # the earlier attempt's timings ride along
    frames, expected = list(iter_frames(video)), list(iter_frames(whole_video))
    assert len(frames) == len(expected) == out.meta["steps"][6]["frames"]
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected))


def test_the_native_continuation_refuses_bytes_it_cannot_use(native, inputs):
    from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
    from spinbot.tasks.talk import prepare_image, prepare_speech

    params = InfiniteTalkParams(**RUN)
    speech, _, _ = prepare_speech(inputs[1], params)
    backend = NativeTalkBackend()
    image, _ = prepare_image(inputs[0], backend, params)
    state = backend.prepare(image, speech, params)
    before = state.generator.get_state()
    for data in (b"", b"not a torch file", b"PK\x03\x04 a zip, and not one"):
        with pytest.raises(ValueError, match="not a native checkpoint"):
            backend.restore(state, data)
    wrong = torch.zeros(1, 16, 7, 2, 2)
    buffer = io.BytesIO()
    torch.save({"generator": before, "motion_latent": wrong}, buffer)
    with pytest.raises(ValueError, match="motion latents are"):
        backend.restore(state, buffer.getvalue())
    assert torch.equal(state.generator.get_state(), before) and state.motion_latent is None


def test_a_model_file_replaced_in_place_starts_the_render_afresh(native, inputs, tmp_path, monkeypatch, use_settings):
    """Another LoRA under the same name (the same header, other weights): windows rendered with the old one are not
    continued with the new one (numerics.py), and the output says which numerics changed."""
    from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
    from tests.support.renders import watch_renders

    models = tmp_path / "models"
    shutil.copytree(native, models)
    use_settings(models_dir=models)
    seen = watch_renders(monkeypatch, NativeTalkBackend)
    seen["fail_at"] = 2
    with pytest.raises(RuntimeError, match="the render stopped at window 2"):
        run_talk(tmp_path / "run", *inputs, **RUN)
    lora = models / "loras" / DEFAULTS.lora_model
    save(lora, {k: v * 2 for k, v in lora_tensors().items()})
    seen["calls"] = []
    out, _ = run_talk(tmp_path / "run", *inputs, **RUN)
    assert seen["calls"] == [0, 1, 2, 3] and out.meta["resumed_from_window"] is None
    assert out.meta["checkpoint_ignored"] == "made with other backend numerics (changed: files)"


def test_the_numerics_name_precision_settings_and_file_identities_not_paths(models_dir, tmp_path):
    from spinbot.backends.talk.infinitetalk.loading import Precision, resolve_files
    from spinbot.backends.talk.infinitetalk.numerics import render_numerics

    files = resolve_files(DEFAULTS, models_dir)
    cuda = torch.device("cuda")  # for_device resolves no kernel for a named one: no GPU needed

    def numerics(precision: Precision, compile_mode: str | None = "default", ranks: int = 1, **moved) -> dict:
        return render_numerics(precision, compile_mode, ranks, files | moved, seed=1, lora_strength=1.0)

    base = numerics(Precision.for_device(cuda, attention="sdpa"))
    assert base["dtypes"] == {"transformer": "bfloat16", "encoders": "bfloat16", "audio": "float32", "vae": "float32"}
    changed = {
        "attention": Precision.for_device(cuda, attention="int8"),
        "fp8": Precision.for_device(cuda, attention="sdpa", fp8=True),
        "dtypes": Precision.for_device(cuda, attention="sdpa", vae_dtype="bfloat16"),
        "fast_vae": Precision.for_device(cuda, attention="sdpa", fast_vae=True),
    }
    for key, precision in changed.items():
        other = numerics(precision)
        assert [k for k in base if base[k] != other[k]] == [key]
    assert numerics(Precision.for_device(cuda, attention="sdpa"), ranks=4)["ranks"] == 4
    # the CPU runs float32 whatever the settings say: SPINBOT_TALK_FP8 there changes nothing, nor a resume
    cpu = torch.device("cpu")
    assert numerics(Precision.for_device(cpu, fp8=True)) == numerics(Precision.for_device(cpu, fp8=False))

    copy = tmp_path / "elsewhere" / "vae.safetensors"  # the same file on another worker: another path and mtime
    copy.parent.mkdir()
    shutil.copyfile(files["vae_model"], copy)
    plain = Precision.for_device(cuda, attention="sdpa")
    assert numerics(plain, vae_model=copy)["files"]["vae_model"][1:] == base["files"]["vae_model"][1:]
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1  # the last weight's last byte
    copy.write_bytes(bytes(data))
    assert numerics(plain, vae_model=copy)["files"]["vae_model"] != numerics(plain)["files"]["vae_model"]
    assert len(numerics(plain)["files"]["wav2vec_model"]) >= 2  # a folder: each of its files


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


# ---- sampler ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, audio, passes",
    [
        (5.0, 4.0, ("cond", "no_text", "no_text_no_audio")),  # the official defaults: 3 forward passes a step
        (1.0, 4.0, ("cond", "no_audio")),
        (5.0, 1.0, ("cond", "no_text")),
        (1.0, 1.0, ("cond",)),  # the distillation LoRA's setting
    ],
)
def test_guidance_runs_only_the_passes_its_scales_need(text, audio, passes):
    guidance = Guidance(text, audio)
    calls: list[str] = []

    def predict(name: str, latent: torch.Tensor, t: float) -> torch.Tensor:
        calls.append(name)
        return torch.zeros_like(latent)

    denoise(torch.randn(1, 4, 2, 2, 2), FlowSampler("euler", 3, 7.0), guidance, predict)
    assert guidance.passes == passes and calls == list(passes) * 3


def test_guidance_combines_as_the_official_code():
    v = {name: torch.full((2,), float(i + 1)) for i, name in enumerate(("cond", "no_text", "no_text_no_audio"))}
    official = v["no_text_no_audio"] + 5.0 * (v["cond"] - v["no_text"]) + 4.0 * (v["no_text"] - v["no_text_no_audio"])
    assert torch.equal(Guidance(5.0, 4.0).combine(v), official)
    two = {"cond": torch.tensor([3.0]), "no_audio": torch.tensor([1.0])}
    assert torch.equal(Guidance(1.0, 4.0).combine(two), torch.tensor([1.0 + 4.0 * 2.0]))


def test_euler_integrates_a_straight_flow_exactly():
    """x_sigma = (1 - sigma) x0 + sigma noise has velocity noise - x0 everywhere: Euler lands on x0 from noise."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 3, 2, 2, generator=g), torch.randn(1, 4, 3, 2, 2, generator=g)
    seen: list[float] = []

    def predict(name: str, latent: torch.Tensor, t: float) -> torch.Tensor:
        seen.append(t)
        return noise - x0

    out = denoise(noise.clone(), FlowSampler("euler", 6, 7.0), Guidance(), predict)
    assert torch.allclose(out, x0, atol=1e-6)
    sigmas = shifted(np.linspace(1.0, 0.001, 6), 7.0)  # official: linspace(1000, 1, steps), shifted
    assert np.allclose(seen, sigmas * 1000, rtol=1e-6)


def test_euler_steps_a_linear_field_by_the_sigma_differences():
    """dx/dsigma = x: each Euler step multiplies by 1 + (sigma_next - sigma)."""
    sampler = FlowSampler("euler", 4, 11.0)
    sigmas = np.append(shifted(np.linspace(1.0, 0.001, 4), 11.0), 0.0)
    out = denoise(torch.ones(1, 1, 1, 1, 1), sampler, Guidance(), lambda name, x, t: x)
    assert float(out) == pytest.approx(np.prod(1 + np.diff(sigmas)), rel=1e-6)


def test_schedules_and_shift():
    for name in ("unipc", "dpm++_sde"):
        sampler = FlowSampler(name, 4, 7.0)
        expected = shifted(np.linspace(float(shifted(0.999, 7.0)), 0.0, 5)[:-1], 7.0)
        assert np.allclose(sampler.sigmas[:-1], expected, rtol=1e-6) and sampler.sigmas[-1] == 0.0
        assert np.allclose(sampler.timesteps, expected * 1000, atol=1)  # integer timesteps, as Wan's classes
    with pytest.raises(ValueError, match="unknown sampling_scheduler 'heun'"):
        sigma_schedule("heun", 4, 7.0)


def test_sde_sampler_draws_its_noise_from_the_generator():
    def run(seed: int) -> torch.Tensor:
        return denoise(
            torch.ones(1, 2, 1, 2, 2),
            FlowSampler("dpm++_sde", 3, 7.0),
            Guidance(),
            lambda name, x, t: 0.5 * x,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


# ---- audio windows, audio scale, VAE names ------------------------------------------------------------------------


def test_audio_windows_clamp_at_the_start_and_reverse_past_the_end():
    embedding = torch.arange(6.0)[:, None, None]  # frame i holds i
    windows = audio_windows(embedding, start=0, length=2)[..., 0, 0]
    assert windows.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3]]
    tail = audio_windows(embedding, start=4, length=3)[..., 0, 0]
    assert tail.tolist() == [[2, 3, 4, 5, 5], [3, 4, 5, 5, 4], [4, 5, 5, 4, 3]]


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
