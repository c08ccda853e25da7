"""The native InfiniteTalk pipeline against the official one, end to end, on the CPU.

tests/reference/infinitetalk_pipeline_official.safetensors holds what the official `generate_infinitetalk`
(MeiGen-AI/InfiniteTalk, run by scripts/make_infinitetalk_reference.py) produced on a tiny configuration with random
weights: a 30x44 portrait, 6.24 s of speech through the official wav2vec2 path, UMT5 / CLIP features given, three
81-frame windows with 9 motion frames, 4 Euler steps with text guidance 5 and audio guidance 4, colour correction 1
-- the official settings, at tiny sizes. Here the same weights (tests/support/infinitetalk_reference.py builds them
from names, and the file's fingerprints prove they are the official run's) go through our loaders and our pipeline
(bucket sizing, wav2vec2 features, image condition, audio windows, guidance, sampler, motion frames, VAE, colour
transfer), with the official run's initial noise per window replayed, and every stage is compared.

A second test runs the seed's own settings, where we deliberately differ from the official defaults (dpm++_sde,
6 steps, shift 11, 25 motion frames, audio_scale 1.6), on the same models: determinism, frame count, and that each
window continues from the previous one's last frames.
"""

from __future__ import annotations

import json
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

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from spinbot.backends.talk.base import SpeechTrack
from spinbot.backends.talk.infinitetalk import pipeline
from spinbot.backends.talk.infinitetalk.audio import OFFICIAL_PREPROCESSOR, load_audio_encoder
from spinbot.backends.talk.infinitetalk.loading import Models
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.sizing import BUCKETS, fit_portrait
from spinbot.backends.talk.infinitetalk.vae import TEMPORAL_STRIDE, load_vae, wan_name
from spinbot.tasks.talk import InfiniteTalkParams
from spinbot.tasks.windows import plan_windows
from tests.support import infinitetalk_reference as ref

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ref.OFFICIAL

# Bounds. Both sides compute in float32; they differ in summation order (attention; the official VAE runs its own
# cached causal convolutions, ours diffusers'), which four Euler steps with guidance 5 / 4 over three windows, each fed
# the previous one's decoded frames, amplify. Measured (CPU, torch 2.14): latents 2.1e-6 to 2.3e-6 relative, motion
# latents 5e-8 to 2.2e-6, wav2vec2 features 0 (identical), frames at most 0.53 levels from the official float output
# (our rounding to 8 bits is 0.5 of it; 99.4% equal the official frames rounded). The bounds leave 50x on the latents
# for other CPUs and BLAS builds and stay far below what a pipeline mistake costs: shift 7.5 for 7 moves the latents
# by 0.22 and frames by up to 154 levels; colour correction 0.9 for 1 moves the second window's latents by 3.5e-3.
LATENT_RTOL = 1e-4  # relative L2 error of each window's final latents and of its motion latents
FRAME_LEVELS = 0.5 + 0.25  # max |ours - official x 255|: our rounding to uint8, plus float and float16-storage error
FRAME_MEAN_LEVELS = 0.3  # mean of the same: rounding alone averages 0.25
AUDIO_RTOL = 1e-5  # wav2vec2 features: one forward, no amplification


def assert_official_weights(state: dict[str, torch.Tensor], recorded: dict[str, list]) -> None:
    """The same tensor names and shapes as the official run's, and the same values (checksums to float64
    rounding: summation order may differ between CPUs)."""
    ours = ref.fingerprint(state)
    assert sorted(ours) == sorted(recorded)
    for name, (shape, check) in recorded.items():
        assert ours[name][0] == shape, name
        assert ours[name][1] == pytest.approx(check, rel=1e-9), name


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict]:
    path = ROOT / ref.REFERENCE_FILE
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["reference"])
    return load_file(str(path)), meta


class Given(torch.nn.Module):
    """A stand-in encoder (UMT5 or CLIP): the official run was handed these features too; it records its inputs."""

    def __init__(self, features):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # pipeline.on_device moves it like a real encoder
        self.features, self.inputs = features, []

    def forward(self, x):
        self.inputs.append(x)
        return self.features(x)


class RecordingVAE:
    """Our WanVAE, recording each window's final latents (decode) and motion latents (encode of motion frames)."""

    def __init__(self, vae, motion_frames: int):
        self.vae, self.motion_frames = vae, motion_frames
        self.latents: list[torch.Tensor] = []
        self.motion: list[torch.Tensor] = []
        self.motion_frames_seen: list[torch.Tensor] = []

    def encode(self, video):
        out = self.vae.encode(video)
        if video.shape[2] == self.motion_frames:
            self.motion_frames_seen.append(video[0].clone())
            self.motion.append(out[0].clone())
        return out

    def decode(self, latents):
        self.latents.append(latents[0].clone())
        return self.vae.decode(latents)


@pytest.fixture(scope="module")
def models(reference, tmp_path_factory) -> Models:
    """Our models with the official run's weights: the transformer built here, the VAE and wav2vec2 written in their
    official file formats and read by our loaders. Each set's fingerprints must equal the official run's."""
    _, meta = reference
    folder = tmp_path_factory.mktemp("reference_models")
    transformer = InfiniteTalkModel(InfiniteTalkConfig(**ref.DIT))
    dit = ref.generated_state({k: tuple(v.shape) for k, v in transformer.state_dict().items()})
    assert_official_weights(dit, meta["weights"]["dit"])
    transformer.load_state_dict(dit, strict=True)

    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        names = {wan_name(k): tuple(v.shape) for k, v in AutoencoderKLWan(base_dim=ref.VAE_DIM).state_dict().items()}
    vae_state = ref.generated_state(names)
    assert_official_weights(vae_state, meta["weights"]["vae"])
    save_file(vae_state, str(folder / "Wan2_1_VAE.safetensors"))

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    wav2vec = Wav2Vec2Model(Wav2Vec2Config(**ref.WAV2VEC2))
    w2v_state = ref.generated_state({k: tuple(v.shape) for k, v in wav2vec.state_dict().items()})
    assert_official_weights(w2v_state, meta["weights"]["wav2vec2"])
    wav2vec.load_state_dict(w2v_state, strict=True)
    wav2vec.save_pretrained(str(folder / "chinese-wav2vec2-base"))
    (folder / "chinese-wav2vec2-base" / "preprocessor_config.json").write_text(json.dumps(ref.PREPROCESSOR))

    assert ref.checksum(ref.clip_features()) == pytest.approx(meta["given"]["clip_features"], rel=1e-12)
    return Models(
        transformer.eval(),
        load_vae(folder / "Wan2_1_VAE.safetensors"),
        Given(ref.text_features),
        Given(lambda image: ref.clip_features()),
        load_audio_encoder(folder / "chinese-wav2vec2-base"),
        None,
        {},
    )


def speech_track() -> SpeechTrack:
    audio = ref.speech().astype(np.float32) / 32768.0
    return SpeechTrack(audio, ref.SAMPLE_RATE, ref.FPS, ref.FRAMES, features=None)


def generate(
    models: Models,
    params: InfiniteTalkParams,
    seed: int,
    noise: list[torch.Tensor] | None = None,
    windows: int | None = None,
):
    """Our pipeline through prepare / render for the task's window plan (its first `windows` windows):
    (frames, state, recording VAE)."""
    recording = RecordingVAE(models.vae, params.motion_frame)
    run = Models(models.transformer, recording, models.text, models.clip, models.audio, None, {})
    image = fit_portrait(ref.portrait(), ref.BUCKETS)
    state = pipeline.prepare(run, image, speech_track(), params, pipeline.settings_from(params, seed))
    if noise is not None:
        replay = iter(noise)
        state.noise = lambda shape: next(replay).reshape(shape)
    plan = plan_windows(ref.FRAMES, params.frame_window_size, params.motion_frame)[:windows]
    frames = np.stack([f for w in plan for f in pipeline.render(state, w)])
    return frames, state, recording


def test_the_reference_was_made_from_this_configuration(reference):
    tensors, meta = reference
    config = meta["config"]
    assert config["dit"] == json.loads(json.dumps(ref.DIT)) and config["official"] == OFFICIAL
    assert config["buckets"] == {k: list(v) for k, v in ref.BUCKETS.items()}
    assert torch.equal(tensors["portrait"], torch.from_numpy(ref.portrait()))
    assert torch.equal(tensors["speech"], torch.from_numpy(ref.speech()))
    assert meta["audio_stage"]["normalizes_waveform"] is False  # the official folder's preprocessor_config.json
    assert OFFICIAL_PREPROCESSOR == ref.PREPROCESSOR


def test_our_bucket_tables_are_the_official_ones(reference):
    _, meta = reference
    assert set(meta["official_tables"]) == set(BUCKETS)  # both tables recorded, so the loop checks each
    for name, table in meta["official_tables"].items():
        assert {k: list(v) for k, v in BUCKETS[name].items()} == table


def test_official_settings_give_the_official_frames(reference, models):
    """Euler, 4 steps, shift 7, text guidance 5, audio guidance 4, 81-frame windows with 9 motion frames, colour
    correction 1, audio_scale 1 (the official model has none): every stage against the official run."""
    tensors, _ = reference
    params = InfiniteTalkParams(
        sampling_scheduler="euler",
        sampling_steps=OFFICIAL["sampling_steps"],
        sampling_shift=OFFICIAL["shift"],
        sampling_cfg=OFFICIAL["text_guide_scale"],
        audio_cfg_scale=OFFICIAL["audio_guide_scale"],
        audio_scale=1.0,
        frame_window_size=OFFICIAL["frame_num"],
        motion_frame=OFFICIAL["motion_frame"],
        color_correction=OFFICIAL["color_correction_strength"],
        positive_prompt=ref.PROMPT,
        negative_prompt=ref.NEGATIVE_PROMPT,
    )
    windows = [tensors[f"noise_{i}"] for i in range(3)]
    frames, state, vae = generate(models, params, OFFICIAL["seed"], noise=windows)

    # the portrait: same bucket, same resize and crop, same [-1, 1] arithmetic, bit for bit
    assert torch.equal(models.clip.inputs[-1], tensors["clip_input"][:, :, 0])
    # wav2vec2 features, one row per video frame (the official run's first 16 channels and every row's norm)
    assert relative(state.audio[..., :16], tensors["audio_embedding_head"]) < AUDIO_RTOL
    assert relative(state.audio.norm(dim=-1), tensors["audio_embedding_norms"]) < AUDIO_RTOL
    # per window: the motion latents the window starts from, and its final latents
    assert len(vae.latents) == len(windows) == 3
    motion = [state.y[0, 4:, :1]] + vae.motion  # window 0 starts from the portrait's latent
    for i in range(3):
        assert relative(motion[i], tensors[f"motion_latents_{i}"]) < LATENT_RTOL, f"window {i} motion latents"
        assert relative(vae.latents[i], tensors[f"latents_{i}"]) < LATENT_RTOL, f"window {i} latents"
    # the frames, against the official output in 8-bit levels
    official = ((tensors["video"].float().permute(1, 2, 3, 0) + 1.0) / 2.0 * 255.0).numpy()
    assert frames.shape == official.shape == (ref.FRAMES, 32, 32, 3)
    error = np.abs(frames.astype(np.float64) - official)
    assert error.max() <= FRAME_LEVELS and error.mean() <= FRAME_MEAN_LEVELS


def test_seed_settings_are_deterministic_and_each_window_continues_the_last(models):
    """The seed's defaults (dpm++_sde, 6 steps, shift 11, 25 motion frames, audio_scale 1.6, colour correction 1),
    where we deliberately differ from the official recipe, on the same models."""
    params = InfiniteTalkParams(positive_prompt=ref.PROMPT, negative_prompt=ref.NEGATIVE_PROMPT)
    assert (params.sampling_scheduler, params.motion_frame, params.sampling_shift) == ("dpm++_sde", 25, 11.0)
    windows = plan_windows(ref.FRAMES, params.frame_window_size, params.motion_frame)
    first, _state, vae = generate(models, params, seed=290381)
    assert first.shape == (ref.FRAMES, 32, 32, 3) and first.dtype == np.uint8
    assert first.std() > 10  # an image, not a flat field
    again, _, _ = generate(models, params, seed=290381, windows=2)  # the SDE sampler's noise comes from the seed
    assert np.array_equal(again, first[: windows[1].end])
    assert len(windows) == len(vae.latents) == 3
    motion_latents = 1 + (params.motion_frame - 1) // TEMPORAL_STRIDE  # 25 frames -> 7 latent frames
    for k in (1, 2):
        # the window is conditioned on the previous window's last 25 frames exactly as they were written out
        written = first[windows[k].start : windows[k - 1].end].astype(np.float64)
        seen = ((vae.motion_frames_seen[k - 1].permute(1, 2, 3, 0) + 1.0) / 2.0 * 255.0).numpy()
        assert seen.shape == written.shape == (params.motion_frame, 32, 32, 3)
        assert np.abs(seen - written).max() <= 0.5 + 1e-3  # only the rounding to 8 bits
        # and its first 7 latent frames are pinned to their encoding through every step
        assert vae.motion[k - 1].shape[1] == motion_latents
        assert torch.equal(vae.latents[k][:, :motion_latents], vae.motion[k - 1])
