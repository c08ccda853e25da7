"""InfiniteTalk's streaming generation: conditions once per job, then one window at a time.

Per job (`prepare`): UMT5 features of the positive (and, for text guidance, the negative) prompt; CLIP features of
the portrait; wav2vec2 features of the whole speech, one row per video frame; the image condition `y` = 4 mask
channels (1 on the first latent frame) + the VAE latent of [portrait, zero frames], the same in every window for an
image input (official `generate_infinitetalk`).

Per window (`render`), for the task's window plan (spinbot.tasks.windows):
1. The window's audio: per-frame 5-frame wav2vec2 windows for its frames (audio.py).
2. Motion latents: the first window uses the portrait's latent (one latent frame); each later window VAE-encodes its
   first `motion_frame` frames, which the previous window generated (1 + (M - 1) // 4 latent frames).
3. Fresh noise from the job's seeded generator; the text, image and audio conditions of each guidance pass
   projected once (InfiniteTalkModel.conditions); the sampler runs `sampling_steps` steps, the motion latents
   written over the first latent frames before and after every step (the official code also writes a noised copy
   first, which that write replaces entirely).
4. VAE decode, Lab colour transfer to the portrait, and the frames the window adds (its motion frames are already
   in the video) go to the writer; its last `motion_frame` frames, colour-corrected, are the next window's motion.

Window length and the VAE's stride: the VAE maps 1 + 4k frames to 1 + k latent frames, so a window generates
G = 1 + 4 ceil((W - 1) / 4) frames for `frame_window_size` W (G = W for the default 81) and the task's plan keeps its
contract: a window starts where the scheduler says, and its frames [W - M, W) are the next window's context, so a
longer G only adds frames past W that are dropped. The official loop is this plan with W = 81, M = 25: windows every
W - M = 56 frames, motion frames dropped from every window but the first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spinbot.backends.talk.base import SpeechTrack
from spinbot.backends.talk.infinitetalk.audio import SAMPLE_RATE, audio_windows
from spinbot.backends.talk.infinitetalk.color import match_colors, reference_stats
from spinbot.backends.talk.infinitetalk.loading import Models
from spinbot.backends.talk.infinitetalk.model import Conditions, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.sampler import PASSES, SCHEDULERS, FlowSampler, Guidance, denoise
from spinbot.backends.talk.infinitetalk.vae import SPATIAL_STRIDE, TEMPORAL_STRIDE
from spinbot.errors import ParamsError
from spinbot.media.audio import resample
from spinbot.tasks.windows import Window

log = logging.getLogger(__name__)

MASK_CHANNELS = 4  # the first video frame, repeated to fill a latent frame's 4 video frames


@dataclass(frozen=True)
class Settings:
    """What the sampler does, from the params (and the backend's defaults where the params have no field)."""

    scheduler: str
    steps: int
    shift: float
    guidance: Guidance
    audio_scale: float
    seed: int
    color_strength: float  # color_correction
    window: int  # frame_window_size
    motion: int  # motion_frame
    generated: int  # frames each window generates: 1 + 4k >= window


@dataclass
class TalkState:
    settings: Settings
    models: Models
    image: torch.Tensor  # [1, 3, H, W] in [-1, 1]
    colors: tuple[torch.Tensor, torch.Tensor]  # the portrait's Lab statistics
    text: dict[bool, torch.Tensor]  # with the prompt (True) or the negative prompt (False): [tokens, text_dim]
    clip: torch.Tensor  # [1, 257, 1280]
    audio: torch.Tensor  # [frames, 12, 768]
    y: torch.Tensor  # [1, 20, T, h, w]
    motion: torch.Tensor | None = None  # the next window's motion frames [1, 3, M, H, W] in [-1, 1]
    # their latents, when encoded ahead of the next window (a checkpoint: continuation.py), else None
    motion_latent: torch.Tensor | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    # Each window's initial noise for a shape; None: drawn from `generator`. A reference run replays recorded noise.
    noise: Callable[[tuple[int, ...]], torch.Tensor] | None = None
    window_seconds: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # what the numbers come from besides the params (numerics.py): a checkpoint made under others is not continued
    numerics: dict[str, Any] = field(default_factory=dict)


StepReport = Callable[[int, int, int], None]  # (window index, steps done, steps in the window)


def settings_from(params: Any, seed: int) -> Settings:
    """The sampler's settings from the params; `seed` where the params have none (InfiniteTalkParams has no seed
    field: a `seed` attribute, if one appears, takes precedence)."""
    if params.sampling_scheduler not in SCHEDULERS:
        raise ParamsError(
            f"sampling_scheduler {params.sampling_scheduler!r} is not available in the native "
            f"backend; use one of: {', '.join(SCHEDULERS)}"
        )
    if params.motion_frame < 1:
        raise ParamsError(
            "the native backend needs motion_frame >= 1: each window continues from the last frames of the one before"
        )
    window = params.frame_window_size
    params_seed = getattr(params, "seed", None)
    return Settings(
        scheduler=params.sampling_scheduler,
        steps=params.sampling_steps,
        shift=float(params.sampling_shift),
        guidance=Guidance(params.sampling_cfg, params.audio_cfg_scale),
        audio_scale=params.audio_scale,
        seed=int(params_seed if params_seed is not None else seed),
        color_strength=float(params.color_correction),
        window=window,
        motion=params.motion_frame,
        generated=1 + TEMPORAL_STRIDE * math.ceil((window - 1) / TEMPORAL_STRIDE),
    )


def prepare(models: Models, image: np.ndarray, speech: SpeechTrack, params: Any, settings: Settings) -> TalkState:
    device = models.transformer.patch_embedding.weight.device
    height, width = image.shape[:2]
    if height % (2 * SPATIAL_STRIDE) or width % (2 * SPATIAL_STRIDE):
        raise ParamsError(f"the portrait is {width}x{height}; the native backend needs multiples of 16")
    with torch.inference_mode():
        portrait = to_unit_range(image, device)
        text = encode_prompts(models, params, settings.guidance, device)
        with on_device(models.clip, device):
            clip = models.clip(portrait)
        audio = models.audio(resample(speech.audio, speech.sample_rate, SAMPLE_RATE), speech.frames)
        y = image_condition(models, portrait, settings.generated)
        colors = reference_stats((portrait[0].permute(1, 2, 0) + 1.0) / 2.0)
    generator = torch.Generator("cpu").manual_seed(settings.seed)  # CPU noise: the same on every device
    return TalkState(
        settings,
        models,
        portrait,
        colors,
        text,
        clip,
        audio,
        y,
        generator=generator,
        warnings=stride_warnings(settings),
    )


def to_unit_range(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> [1, 3, H, W] float32 in [-1, 1], with the official arithmetic ((x / 255 - 0.5) * 2)."""
    image = image if image.flags.writeable else image.copy()  # torch warns on (and may write to) a read-only one
    return (torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255 - 0.5) * 2


def encode_prompts(models: Models, params: Any, guidance: Guidance, device: torch.device) -> dict[bool, torch.Tensor]:
    """UMT5 features of the prompt, and of the negative prompt when a pass drops the text."""
    needs_negative = any(name.startswith("no_text") for name in guidance.passes)
    prompts = {True: params.positive_prompt} | ({False: params.negative_prompt} if needs_negative else {})
    with on_device(models.text, device):
        return {keep: models.text(prompt).float() for keep, prompt in prompts.items()}


def image_condition(models: Models, portrait: torch.Tensor, frames: int) -> torch.Tensor:
    """y = [mask (1 on the first latent frame), VAE latent of the portrait followed by frames - 1 zero frames]."""
    video = torch.zeros(1, 3, frames, *portrait.shape[-2:], device=portrait.device)
    video[:, :, 0] = portrait
    latent = models.vae.encode(video)
    mask = torch.zeros(1, MASK_CHANNELS, *latent.shape[2:], device=latent.device)
    mask[:, :, 0] = 1.0
    return torch.cat([mask, latent], dim=1)


def render(state: TalkState, window: Window, on_step: StepReport | None = None) -> Iterator[np.ndarray]:
    """The window's new frames, RGB uint8, in order."""
    started = time.perf_counter()
    s = state.settings
    with torch.inference_mode():
        latent = sample_window(state, window, on_step)
        video = state.models.vae.decode(latent)  # [1, 3, G, H, W]
        frames = match_colors((video[0].permute(1, 2, 3, 0).float() + 1.0) / 2.0, state.colors, s.color_strength)
        tail = frames[s.window - s.motion : s.window]  # output frames [window.end - M, window.end)
        state.motion = (tail * 2.0 - 1.0).permute(3, 0, 1, 2)[None].contiguous()
        state.motion_latent = None
        out = (frames[window.keep] * 255.0).round_().to(torch.uint8).cpu().numpy()
    state.window_seconds.append(time.perf_counter() - started)
    log.info("infinite_talk window done", extra={"window": window.index, "seconds": round(state.window_seconds[-1], 1)})
    yield from out


def sample_window(state: TalkState, window: Window, on_step: StepReport | None) -> torch.Tensor:
    s, models = state.settings, state.models
    motion = motion_latents(state, window)
    audio = audio_windows(state.audio, window.start, s.generated)[None].to(state.y.device)
    shape = tuple(state.y[:, MASK_CHANNELS:].shape)
    noise = (state.noise(shape) if state.noise else torch.randn(shape, generator=state.generator)).to(state.y.device)
    sampler = FlowSampler(s.scheduler, s.steps, s.shift)
    conditions = window_conditions(models.transformer, state, s.guidance.passes, audio)
    last = [time.perf_counter()]

    def pin(latent: torch.Tensor) -> torch.Tensor:
        latent[:, :, : motion.shape[2]] = motion
        return latent

    def predict(name: str, latent: torch.Tensor, t: float) -> torch.Tensor:
        timestep = torch.tensor([t], device=latent.device, dtype=torch.float32)
        return models.transformer(
            latent, timestep, None, None, state.y, None, s.audio_scale, conditions=conditions[name]
        )

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        state.step_seconds.append(now - last[0])
        last[0] = now
        if on_step is not None:
            on_step(window.index, done, total)

    return denoise(noise, sampler, s.guidance, predict, pin, report, state.generator)


def window_conditions(
    model: InfiniteTalkModel, state: TalkState, passes: tuple[str, ...], audio: torch.Tensor
) -> dict[str, Conditions]:
    """Each guidance pass's conditions for the whole window (official): the prompt or the negative prompt, the
    window's audio or zeros; projected once, not at every step."""
    grid = model.token_grid(state.y.shape)
    return {
        name: model.conditions(
            state.text[PASSES[name][0]][None], state.clip, audio if PASSES[name][1] else torch.zeros_like(audio), grid
        )
        for name in passes
    }


def motion_latents(state: TalkState, window: Window) -> torch.Tensor:
    """The clean latents written over the window's first latent frames: the portrait's for the first window
    (the encoder is causal, so y's first latent frame is the portrait's latent alone), else the encoded motion."""
    if state.motion_latent is not None:  # encoded ahead (continuation.py), or restored from a checkpoint
        latent, state.motion_latent = state.motion_latent, None
        return latent.to(state.y.device)
    if state.motion is None:
        return state.y[:, MASK_CHANNELS:, :1].clone()
    return state.models.vae.encode(state.motion)


@contextmanager
def on_device(module: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Move an encoder to the device for its one use per job, and back to the CPU after (offload)."""
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield
    finally:
        module.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def stride_warnings(s: Settings) -> list[str]:
    warnings = []
    if s.generated != s.window:
        warnings.append(
            f"frame_window_size {s.window} is not 1 + 4k: each window generates {s.generated} frames "
            f"(the VAE's stride) and keeps {s.window}"
        )
    if (s.motion - 1) % TEMPORAL_STRIDE:
        used = 1 + TEMPORAL_STRIDE * ((s.motion - 1) // TEMPORAL_STRIDE)
        warnings.append(
            f"motion_frame {s.motion} is not 1 + 4k: only the first {used} of the {s.motion} context "
            f"frames condition the next window (official behaviour; 25 is the default)"
        )
    return warnings
