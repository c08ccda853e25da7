"""The native infinite_talk backend end to end on tiny models (CPU, CI): the models and the fixtures that run
them are in tests/support/infinitetalk_models.py; the samplers' tests in test_infinitetalk_sampler.py, the loading's
(LoRA, VAE, wav2vec2, dtypes) in test_infinitetalk_loading.py."""

from __future__ import annotations

import io
import logging
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


from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.backends.talk.infinitetalk.vae import load_vae
from spinbot.errors import BackendUnavailable
from spinbot.media.video import iter_frames
from spinbot.tasks.talk import InfiniteTalkParams
from tests.support import infinitetalk_models
from tests.support.infinitetalk_models import DEFAULTS, RUN, lora_tensors, save
from tests.support.tasks import run_talk

# the shared module's fixtures, bound here so that pytest finds them for this module's tests
inputs, models_dir, native = infinitetalk_models.inputs, infinitetalk_models.models_dir, infinitetalk_models.native

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


@pytest.mark.parametrize("change", ["files", "gpu"])
def test_a_model_file_replaced_or_another_gpu_starts_the_render_afresh(
    change, native, inputs, tmp_path, monkeypatch, use_settings, caplog
):
    """Another LoRA under the same name (the same header, other weights), or a resume on another kind of GPU (other
    kernels): windows rendered before are not continued (numerics.py); the render starts over, with a log line, and
    the output says which numerics changed."""
    from spinbot.backends.talk.infinitetalk import numerics
    from spinbot.backends.talk.infinitetalk.backend import NativeTalkBackend
    from tests.support.renders import watch_renders

    models = tmp_path / "models"
    shutil.copytree(native, models)
    use_settings(models_dir=models)
    seen = watch_renders(monkeypatch, NativeTalkBackend)
    if change == "gpu":
        monkeypatch.setattr(numerics, "gpu_kind", lambda device: "NVIDIA H100 80GB HBM3, sm_90")
    seen["fail_at"] = 2
    with pytest.raises(RuntimeError, match="the render stopped at window 2"):
        run_talk(tmp_path / "run", *inputs, **RUN)
    if change == "files":
        lora = models / "loras" / DEFAULTS.lora_model
        save(lora, {k: v * 2 for k, v in lora_tensors().items()})
    else:  # this CPU render plays a GPU's: the first run an H100's, the resume an A100's
        monkeypatch.setattr(numerics, "gpu_kind", lambda device: "NVIDIA A100-SXM4-80GB, sm_80")
    seen["calls"] = []
    with caplog.at_level(logging.WARNING, logger="spinbot.tasks.talk_resume"):
        out, _ = run_talk(tmp_path / "run", *inputs, **RUN)
    assert seen["calls"] == [0, 1, 2, 3] and out.meta["resumed_from_window"] is None
    assert out.meta["checkpoint_ignored"] == f"made with other backend numerics (changed: {change})"
    (logged,) = [r for r in caplog.records if r.getMessage() == "infinite_talk checkpoint ignored and removed"]
    assert logged.reason == out.meta["checkpoint_ignored"]


def test_the_numerics_name_precision_settings_and_file_identities_not_paths(models_dir, tmp_path, monkeypatch):
    from spinbot.backends.talk.infinitetalk.loading import Precision, resolve_files
    from spinbot.backends.talk.infinitetalk.numerics import render_numerics

    files = resolve_files(DEFAULTS, models_dir)
    cuda = torch.device("cuda")  # for_device resolves no kernel for a named one: no GPU needed
    gpu = {"name": "NVIDIA H100 80GB HBM3", "capability": (9, 0)}  # the GPU the numerics find, as this test says
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpu["capability"])

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
    assert base["gpu"] == "NVIDIA H100 80GB HBM3, sm_90"
    # another kind of GPU picks other kernels (cuDNN's FP8 attention is Hopper's): only the GPU changed
    gpu.update(name="NVIDIA A100-SXM4-80GB", capability=(8, 0))
    other_gpu = numerics(Precision.for_device(cuda, attention="sdpa"))
    assert [k for k in base if base[k] != other_gpu[k]] == ["gpu"] and other_gpu[
        "gpu"
    ] == "NVIDIA A100-SXM4-80GB, sm_80"
    gpu.update(name="NVIDIA H100 PCIe", capability=(9, 0))  # Hopper too, with fewer SMs: other kernel plans
    assert numerics(Precision.for_device(cuda, attention="sdpa"))["gpu"] != base["gpu"]
    # the CPU runs float32 whatever the settings say: SPINBOT_TALK_FP8 there changes nothing, nor a resume
    cpu = torch.device("cpu")
    assert numerics(Precision.for_device(cpu, fp8=True)) == numerics(Precision.for_device(cpu, fp8=False))
    assert numerics(Precision.for_device(cpu))["gpu"] is None

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
