"""The native f5_to_tts backend end to end on a tiny F5-TTS (CPU, CI).

The checkpoint is the real format: the package's own CFM around its DiT (same classes, same key names, the
`ema_model.` prefix of the official EMA checkpoints) at tiny sizes with random weights, described by a config.yaml
of the package's format beside it, with the package's vocab.txt; the vocoder is a tiny vocos.Vocos saved as
config.yaml + pytorch_model.bin. All in a temporary SPINBOT_MODELS_DIR in the layout of docs/models.md.
"""

from __future__ import annotations

import shutil
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("f5_tts")
    pytest.importorskip("vocos")

from safetensors.torch import save_file

from spinbot.backends.tts.base import Reference
from spinbot.backends.tts.f5 import backend as f5
from spinbot.backends.tts.f5.loading import load_models
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.errors import BackendUnavailable, InputError, ParamsError, TaskFailed
from spinbot.media.audio import load_audio, rms
from spinbot.models.synth.tts import MEL, TINY_ARCH
from spinbot.samples import BECKETT_TRANSCRIPT, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks.speech_length import SpeechTooLong
from spinbot.tasks.tts import TextToSpeechParams
from spinbot.worker.model_cache import get_model_cache
from tests.support.random_weights import randomized

VOICE_KEY = "jobs/job1/inputs/narrator_voice.wav"
SHORT = "Every expert was once a beginner."
LONG = (
    SHORT + " Failure is not the opposite of learning, it is part of it. Each mistake shows you something the "
    "book could not, so try again, and fail a little better each time."
)
VOCOS = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}
RUN = {"device": "cpu", "nfe_step": 2}


# ---- tiny models in the official formats -------------------------------------------------------------------------


def tiny_cfm(vocab: Path):
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer

    vocab_map, vocab_size = get_tokenizer(str(vocab), "custom")
    mel_kwargs = {
        k: MEL[k]
        for k in ("n_fft", "hop_length", "win_length", "n_mel_channels", "target_sample_rate", "mel_spec_type")
    }
    return randomized(
        lambda: CFM(
            transformer=DiT(**TINY_ARCH, text_num_embeds=vocab_size, mel_dim=100),
            mel_spec_kwargs=mel_kwargs,
            vocab_char_map=vocab_map,
        ),
        std=0.1,
    )


def write_models(models: Path, fmt: str = "safetensors") -> Path:
    folder = models / "F5-TTS" / "F5TTS_v1_Base"
    folder.mkdir(parents=True)
    shutil.copy(str(package_files("f5_tts").joinpath("infer/examples/vocab.txt")), folder / "vocab.txt")
    config = {"model": {"name": "tiny", "backbone": "DiT", "arch": TINY_ARCH, "mel_spec": MEL}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    # The official EMA checkpoint: every key under `ema_model.`, plus the EMA wrapper's own counters.
    ema = {f"ema_model.{k}": v.contiguous() for k, v in tiny_cfm(folder / "vocab.txt").state_dict().items()}
    if fmt == "safetensors":
        save_file(ema, str(folder / "model_1250000.safetensors"))
    else:
        ema.update({"initted": torch.tensor(True), "step": torch.tensor(1)})
        torch.save({"ema_model_state_dict": ema}, folder / "model_1250000.pt")
    write_vocoder(models / "F5-TTS" / "vocos-mel-24khz")
    return models


def write_vocoder(folder: Path) -> None:
    from vocos import Vocos

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(VOCOS))
    torch.manual_seed(1)
    vocoder = Vocos.from_hparams(str(folder / "config.yaml"))
    torch.save(vocoder.state_dict(), folder / "pytorch_model.bin")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def native(use_settings, spinbot_env, models_dir) -> Path:
    use_settings(tts_backend="native", models_dir=models_dir)
    return models_dir


def speak(folder: Path, text: str = SHORT, **params):
    """The f5_to_tts task as the worker runs it; returns the WAV's samples, rate and the node output."""
    store = LocalStore(folder / "store")
    store.upload(voice_path(), VOICE_KEY)
    request = TaskRequest(
        job_id="job1",
        node_id="f5_to_tts",
        task="f5_to_tts",
        params={**RUN, **params},
        values={"text": text, "ref_text": BECKETT_TRANSCRIPT},
        artifacts={"narrator_voice": VOICE_KEY},
    )
    out = execute_task(request, store, workdir_root=folder, report=lambda f, m: None)
    audio, sr = sf.read(store.path(out.artifacts["audio"]), dtype="float32")
    return audio, sr, out


# ---- the task end to end ------------------------------------------------------------------------------------------


def test_wav_rate_level_and_the_unused_temperature_are_reported(native, tmp_path):
    audio, sr, out = speak(tmp_path, target_rms=0.05, temperature=0.3)
    info = sf.info(tmp_path / "store" / out.artifacts["audio"])
    assert (info.samplerate, info.channels, sr) == (24000, 1, 24000)
    assert rms(audio) == pytest.approx(0.05, rel=0.05)
    assert out.meta["backend"] == "native"
    assert out.meta["ignored_params"] == {"temperature": 0.3}
    assert "temperature" not in out.meta["honoured_params"] and "nfe_step" in out.meta["honoured_params"]
    assert any(n.startswith("temperature:") for n in out.meta["notes"])


def test_length_follows_the_reference_rate_and_grows_with_text_and_one_over_speed(native, tmp_path):
    short, _, out = speak(tmp_path / "a", SHORT)
    long, _, long_out = speak(tmp_path / "b", LONG)
    slow, _, _ = speak(tmp_path / "c", SHORT, speed=0.5)
    ref_audio, ref_sr = load_audio(voice_path())
    voice = f5.prepare_reference(Reference(ref_audio, ref_sr, BECKETT_TRANSCRIPT), 0.1, 1.0)
    # F5's duration rule: reference frames per byte of its transcript x the chunk's bytes / speed.
    expected = int(len(voice.audio) // 256 / len(voice.text.encode()) * len(SHORT.encode())) * 256
    assert len(short) == pytest.approx(expected, abs=256 * 2)
    assert len(slow) == pytest.approx(2 * len(short), rel=0.02)
    assert len(long) > 3 * len(short)
    assert [c["text"] for c in out.meta["chunks"]] == [SHORT]
    assert len(long_out.meta["chunks"]) >= 2  # the Beckett voice is slow: about 90 characters per chunk
    assert " ".join(c["text"] for c in long_out.meta["chunks"]) == LONG
    assert long_out.meta["chunking"]["max_chars"] == voice.max_chars


def test_same_seed_same_samples_other_seed_other_samples(native, tmp_path):
    first, _, _ = speak(tmp_path / "a", seed=7)
    again, _, _ = speak(tmp_path / "b", seed=7)
    other, _, _ = speak(tmp_path / "c", seed=8)
    np.testing.assert_array_equal(first, again)
    assert len(other) == len(first)
    assert np.abs(other - first).mean() > 0.01 * np.abs(first).mean()


def test_nfe_step_and_cfg_strength_change_the_speech(native, tmp_path):
    base, _, _ = speak(tmp_path / "a")
    steps, _, _ = speak(tmp_path / "b", nfe_step=3)
    cfg, _, _ = speak(tmp_path / "c", cfg_strength=0.0)
    assert not np.array_equal(base, steps) and not np.array_equal(base, cfg)


def test_the_model_stays_loaded_between_jobs(native, tmp_path):
    speak(tmp_path / "a")
    cache = get_model_cache()
    hits = cache.hits
    speak(tmp_path / "b")
    assert cache.hits == hits + 2  # the CFM and the vocoder
    assert any(key[1].startswith("f5tts-cfm:cpu:torch.float32") for key in cache.keys())


# ---- pieces -------------------------------------------------------------------------------------------------------


def test_a_chunk_comes_out_the_same_alone_or_in_a_batch(native):
    ref_audio, ref_sr = load_audio(voice_path())
    voice = f5.prepare_reference(Reference(ref_audio, ref_sr, BECKETT_TRANSCRIPT), 0.1, 1.0)
    chunks = f5.plan(LONG, voice, 1.0, 256)
    models = load_models("F5TTS_v1_Base", native, torch.device("cpu"))
    params = TextToSpeechParams(**RUN)
    with torch.inference_mode():
        cond = f5.reference_mel(models, voice)
        together = f5.sample_batch(models, cond, voice, chunks, params)
        alone = [f5.sample_batch(models, cond, voice, [c], params)[0] for c in chunks]
    assert len({c.frames for c in chunks}) > 1  # different lengths: the batch is padded
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_pt_checkpoint_loads_to_the_same_weights(tmp_path):
    pt = write_models(tmp_path / "pt", fmt="pt")
    st = write_models(tmp_path / "st")
    a = load_models("F5TTS_v1_Base", pt, torch.device("cpu")).cfm.state_dict()
    b = load_models("F5TTS_v1_Base", st, torch.device("cpu")).cfm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reference_text_gets_the_package_endings():
    assert f5.f5_ref_text("Fail better") == "Fail better. "
    assert f5.f5_ref_text("Fail better.") == "Fail better. "
    assert f5.f5_ref_text("再试一次。") == "再试一次。"


def test_the_linear_cross_fade_overlaps_by_the_fade():
    a, b = np.ones(1000, np.float32), np.ones(800, np.float32)
    out, joins = f5.crossfade_linear([a, b], 100)
    assert len(out) == 1700 and joins == [950]
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # linear fades of equal signals sum to the signal


# ---- errors: one line naming the file and the folder ---------------------------------------------------------------


@pytest.mark.parametrize(
    "missing, named",
    [
        ("F5TTS_v1_Base/model_1250000.safetensors", "model_*.safetensors (or .pt)"),
        ("F5TTS_v1_Base/vocab.txt", "vocab.txt"),
        ("vocos-mel-24khz/pytorch_model.bin", "pytorch_model.bin"),
    ],
)
def test_a_missing_file_fails_with_one_line_naming_it(native, tmp_path, use_settings, missing, named):
    partial = tmp_path / "partial"
    shutil.copytree(native, partial)
    (partial / "F5-TTS" / missing).unlink()
    use_settings(models_dir=partial)
    with pytest.raises((BackendUnavailable, TaskFailed)) as err:
        speak(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert named in message and str((partial / "F5-TTS" / missing).parent) in message


def test_cuda_on_a_machine_without_one_says_so(native, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without one, wherever this runs
    with pytest.raises((BackendUnavailable, TaskFailed), match="device=cpu"):
        speak(tmp_path, device="cuda")


def test_reference_edges_are_trimmed_as_the_package_trims_them():
    from pydub import AudioSegment, silence

    from spinbot.media.audio import resample

    segment = AudioSegment.from_file(str(voice_path()))
    lead = silence.detect_leading_silence(segment, silence_threshold=-42) / 1000
    end = (len(segment) - silence.detect_leading_silence(segment.reverse(), silence_threshold=-42)) / 1000
    audio, sr = load_audio(voice_path())
    start_s, end_s = (i / 24000 for i in f5.trim_silence_edges(resample(audio, sr, 24000)))
    assert start_s == pytest.approx(lead, abs=0.011) and end_s == pytest.approx(end, abs=0.011)


def test_a_plan_longer_than_the_speech_limit_is_refused_before_any_sampling(native, tmp_path, monkeypatch):
    """Attack, 2026-12-05: the chunks' lengths come from the reference's frames per byte of ref_text, which the
    client sets. ref_text "a" over the sample's 12 s made about 280 frames a byte: 900 characters (60 s at
    admission's estimate) planned 2,700 s of speech, all sampled (nfe_step 256 and both guidance passes: hours of a
    GPU, and one sequence of 250,000 frames) before the spoken length was checked. Now the plan is checked first."""
    sampled = []
    monkeypatch.setattr(f5, "synthesize_chunks", lambda *args: sampled.append(args) or [])
    script = "Every expert was once a beginner and every beginner fails more often than not " * 11
    with pytest.raises(SpeechTooLong) as err:
        speak(tmp_path, script, ref_text="a", nfe_step=256)
    message = str(err.value)
    assert "\n" not in message and sampled == []
    assert "the script as this narrator voice and ref_text would speak it" in message
    assert "over the limit of 300 s (SPINBOT_MAX_SPEECH_SECONDS)" in message


def test_the_cpu_budget_is_checked_on_the_chunk_plan_before_any_sampling(native, tmp_path, monkeypatch, use_settings):
    # admission estimates the speech from the script's characters; the plan's own length is what the CPU would make
    use_settings(tts_backend="native", models_dir=native, max_speech_seconds=5)
    sampled = []
    monkeypatch.setattr(f5, "synthesize_chunks", lambda *args: sampled.append(args) or [])
    with pytest.raises(ParamsError) as err:
        speak(tmp_path, SHORT, device="cpu", nfe_step=256)
    assert sampled == [] and "\n" not in str(err.value)
    assert str(err.value).startswith("f5_to_tts: nfe_step 256 on device=cpu over the ")
    assert "s of speech its chunks plan" in str(err.value) and "over the CPU's 160 " in str(err.value)


@pytest.mark.parametrize(
    "device, named",
    [
        ("cuda:7", "f5_to_tts: device 'cuda:7' is not on this machine (1 CUDA GPU(s)); it has: cpu, cuda, cuda:0"),
        ("meta", "f5_to_tts: device 'meta' is not a device this backend runs on"),
        ("mps", "f5_to_tts: device 'mps' is not a device this backend runs on"),
        ("cuda:-1", "f5_to_tts: device 'cuda:-1' is not a device this backend runs on"),
        ("cpu:1", "f5_to_tts: device 'cpu:1' is not a device this backend runs on"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_before_the_models_load(native, tmp_path, monkeypatch, device, named):
    # torch.device takes all of these: "cuda:7" on a one-GPU machine failed in load_models, "meta" deep in the model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("spinbot.backends.tts.f5.loading.load_models", lambda *a, **k: pytest.fail("models loaded"))
    with pytest.raises((InputError, TaskFailed)) as err:
        speak(tmp_path, device=device)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert message.endswith("has: cpu, cuda, cuda:0")  # the devices there are
