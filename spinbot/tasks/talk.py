"""infinite_talk: portrait + speech -> lip-synced talking-head video (H.264 mp4 with the speech muxed).

The seed's workflow, shared by every backend: audio crop to the speech -> speech separation -> loudness
normalization -> per-frame audio features; image resize; generation in sliding windows (spinbot.tasks.windows)
through the backend, each window's frames streamed to the encoder as it finishes; video combine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from spinbot.backends.talk.base import SpeechTrack, TalkBackend
from spinbot.errors import InputError, ParamsError
from spinbot.media.audio import load_audio, resample
from spinbot.media.chunks import ChunkMismatch, join_chunks
from spinbot.media.features import Loudness, fit_length, frame_features, highpass, normalize_loudness, speech_bounds
from spinbot.media.image import load_image
from spinbot.media.video import VideoWriter
from spinbot.settings import get_settings
from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams, ignored_params
from spinbot.tasks.live import LiveOutput
from spinbot.tasks.model_files import model_folders
from spinbot.tasks.talk_resume import WindowCheckpoints, fingerprint
from spinbot.tasks.video_budget import Video, check_videos, talk_levers
from spinbot.tasks.windows import Window, frame_count, plan_windows, refuse_too_many_windows, window_count

TARGET_LUFS = -23.0  # EBU R 128
# The samplers the native backend implements (spinbot.backends.talk.infinitetalk.sampler.SCHEDULERS).
Scheduler = Literal["euler", "unipc", "dpm++_sde"]
MUX_RATE = 48000  # AAC pads its last 1024-sample block: at 48 kHz that stays under half a frame at 25 fps
# Upper bounds where the seed's table gives none, from ComfyUI-WanVideoWrapper's nodes: WanVideoSampler's cfg 0..30,
# MultiTalkWav2VecEmbeds' audio_cfg_scale 0..100, the audio strength 0..10 of its other audio nodes (the lite
# animator's lip corners cross past about 13: a mouth of negative width), and the official InfiniteTalk's
# max_frame_num 1000 for a window (the model was trained on 81 frames).
MAX_CFG = 30
MAX_AUDIO_SCALE = 10
MAX_AUDIO_CFG = 100
MAX_WINDOW_FRAMES = 1000


class InfiniteTalkParams(TaskParams):
    MODEL_FOLDERS = model_folders("infinite_talk")
    # Model loading (paths relative to SPINBOT_MODELS_DIR, laid out as ComfyUI's models/ folder)
    infinitetalk_model: str = Field(
        default="wanvideo/infinite_talk/Wan2_1-InfiniTetalk-Single_fp16.safetensors",
        description="InfiniteTalk audio adapter, in diffusion_models/.",
    )
    vae_model: str = Field(default="wanvideo/Wan2_1_VAE_bf16.safetensors", description="Wan video VAE, in vae/.")
    t5_text_encoder_model: str = Field(
        default="umt5/umt5-xxl-enc-bf16.safetensors",
        description="UMT5 text encoder for the prompts, in text_encoders/.",
    )
    wav2vec_model: str = Field(
        default="TencentGameMate/chinese-wav2vec2-base",
        description="wav2vec2 model folder for the audio features, in wav2vec2/.",
    )
    lora_model: str = Field(
        default="wanvideo/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        description="LoRA merged into the video model at load, in loras/ (empty: none).",
    )
    clip_vision_model: str = Field(
        default="wanvideo/clip_vision_h.safetensors",
        description="CLIP vision encoder for the portrait, in clip_vision/.",
    )
    wan_video_model: str = Field(
        default="wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors",
        description="Wan 2.1 image-to-video diffusion model, in diffusion_models/.",
    )
    # Sampling & generation
    fps: int = Field(default=25, ge=1, le=120, description="Frames per second of the video.")
    positive_prompt: str = Field(
        default="a man is talking to the camera, natural facial expressions, clear lip movement",
        description="What the video should show.",
    )
    negative_prompt: str = Field(
        default="blurry, distorted, deformed face, bad teeth, static, low quality, watermark, text",
        description="What the video should avoid.",
    )
    sampling_steps: int = Field(
        default=6, ge=1, le=200, description="Denoising steps per window: fewer is faster, more may look better."
    )
    sampling_cfg: float = Field(
        default=1.0,
        ge=0,
        le=MAX_CFG,
        description="Guidance scale: how closely the video follows the prompts (1: no guidance pass).",
    )
    sampling_scheduler: Scheduler = Field(default="dpm++_sde", description="Sampler scheduler algorithm.")
    frame_window_size: int = Field(
        default=81, ge=2, le=MAX_WINDOW_FRAMES, description="Frames generated per sliding window."
    )
    motion_frame: int = Field(
        default=25,
        ge=0,
        le=MAX_WINDOW_FRAMES - 1,
        description="Frames of each window carried over from the one before, for smooth motion.",
    )
    # Audio processing
    normalize_loudness: bool = Field(default=True, description="Normalize the speech loudness before animating.")
    audio_scale: float = Field(
        default=1.6, ge=0, le=MAX_AUDIO_SCALE, description="How strongly the speech drives the lips and face."
    )
    audio_cfg_scale: float = Field(
        default=1,
        ge=0,
        le=MAX_AUDIO_CFG,
        description="Guidance scale of the audio: how closely the motion follows the speech.",
    )
    # Beside the seed's table: what its ComfyUI graph fixes in nodes that have no param here
    # (docs/infinitetalk-notes.md)
    resolution: Literal["480p", "720p"] = Field(
        default="480p",
        description="InfiniteTalk's output size bucket set (official --size infinitetalk-480 / infinitetalk-720): the "
        "portrait is snapped to the bucket of the nearest aspect ratio, scaled to cover it (small "
        "portraits are enlarged) and centre-cropped. The native backend only; lite keeps "
        "SPINBOT_TALK_MAX_PIXELS.",
    )
    sampling_shift: float = Field(
        default=11.0,
        gt=0.0,
        le=100.0,
        description="Flow-matching timestep shift (sigma' = shift sigma / (1 + (shift - 1) sigma)). 11 is what the "
        "seed's ComfyUI setup samples with (WanVideoWrapper's InfiniteTalk example: 6 steps, dpm++_sde, "
        "lightx2v LoRA); the official 40-step recipe uses 7 at 480p and 11 at 720p.",
    )
    color_correction: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Strength of the per-window Lab colour transfer to the portrait that keeps long videos from "
        "drifting (official color_correction_strength): 1 fully corrected, 0 off.",
    )

    @model_validator(mode="after")
    def _context_fits_in_window(self) -> InfiniteTalkParams:
        # A model validator, so the rule holds for defaults too: frame_window_size=2 alone meets motion_frame=25.
        if self.motion_frame >= self.frame_window_size:
            raise ValueError(
                f"motion_frame ({self.motion_frame}) must be smaller than frame_window_size "
                f"({self.frame_window_size}): each window repeats motion_frame frames of the one before"
            )
        return self


def guidance_passes(sampling_cfg: float, audio_cfg_scale: float) -> int:
    """Model passes a denoising step makes: one, and one more for each guidance scale that is not 1 (the native
    sampler's Guidance.passes, without importing torch)."""
    return 1 + sum(not math.isclose(scale, 1.0) for scale in (sampling_cfg, audio_cfg_scale))


class DenoisingWork(NamedTuple):
    windows: int
    passes: int  # model passes a denoising step makes (guidance_passes)
    frame_steps: int


def denoising_work(total_frames: int, params: InfiniteTalkParams) -> DenoisingWork:
    """The windows for `total_frames`, the model passes a step makes, and the frame-steps they denoise: each
    window's frames (motion context included: the model denoises them all) x sampling_steps x model passes a step."""
    windows = window_count(total_frames, params.frame_window_size, params.motion_frame)
    passes = guidance_passes(params.sampling_cfg, params.audio_cfg_scale)
    return DenoisingWork(windows, passes, windows * params.frame_window_size * params.sampling_steps * passes)


def check_talk_work(node_id: str, total_frames: int, params: InfiniteTalkParams, limit: int, about: str) -> None:
    """ParamsError, one line, where the windows are too many (spinbot.tasks.windows) or the denoising is over
    SPINBOT_MAX_TALK_FRAME_STEPS. Each param is in range alone, but together they multiply: 200 steps with both
    guidance passes over 300 s of speech are days of a GPU for one job. Run at submission on the speech estimated
    and again here on the real one."""
    refuse_too_many_windows(node_id, total_frames, params.frame_window_size, params.motion_frame, about)
    windows, passes, work = denoising_work(total_frames, params)
    if work <= limit:
        return
    why = {1: "", 2: " (sampling_cfg or audio_cfg_scale not 1)", 3: " (sampling_cfg and audio_cfg_scale not 1)"}
    raise ParamsError(
        f"{node_id}: {windows:,} window{'s' if windows > 1 else ''} of {params.frame_window_size} frames x "
        f"{params.sampling_steps} sampling_steps x {passes} model pass{'es' if passes > 1 else ''} a step"
        f"{why[passes]} is {work:,} frame-steps of denoising ({about}), over the limit of {limit:,} "
        "(SPINBOT_MAX_TALK_FRAME_STEPS): lower sampling_steps, set sampling_cfg or audio_cfg_scale to 1, or make "
        "the script shorter"
    )


def run(ctx: TaskContext, params: InfiniteTalkParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend

    backend = get_backend("infinite_talk")
    speech, image, steps, warnings = _checked_inputs(ctx, backend, params)
    windows = plan_windows(speech.frames, params.frame_window_size, params.motion_frame)
    ctx.progress(0.05, "speech and portrait ready")
    state = backend.prepare(image, speech, params)
    checkpoints, start = _resumed(ctx, backend, state, params, windows, image.shape, speech.fps)
    video = ctx.output_path("talk.mp4")
    live = combine_video(ctx, video, backend, state, windows, speech, image.shape, checkpoints)
    steps.append({"step": "generate", "backend": backend.name, "windows": len(windows) - start})
    steps.append(
        {
            "step": "video_combine",
            "video": "h264 yuv420p mp4, one chunk per window joined without re-encoding",
            "audio": f"aac {MUX_RATE} Hz",
            "frames": speech.frames,
        }
    )
    described = backend.describe(state)
    warnings += described.pop("warnings", []) + ([checkpoints.warning] if checkpoints.warning else [])
    meta = {
        "backend": backend.name,
        "ignored_params": ignored_params(params, set(backend.honoured_params)),
        "steps": steps,
        **_windows_meta(params, windows, start, checkpoints),
        **described,
        "live": live,
        "warnings": warnings,
    }
    key = ctx.save("talk.mp4", video, content_type="video/mp4")
    checkpoints.clear()
    ctx.progress(1.0, "video written")
    return NodeOutput(values={"video_duration": speech.frames / speech.fps}, artifacts={"video": key}, meta=meta)


def _checked_inputs(
    ctx: TaskContext, backend: TalkBackend, params: InfiniteTalkParams
) -> tuple[SpeechTrack, np.ndarray, list[dict[str, Any]], list[str]]:
    """The speech and the fitted portrait, with their steps and warnings, once their real sizes are within the
    limits: checked before any rendering, since admission's estimate is a lower bound (tasks/video_budget)."""
    speech, steps, warnings = prepare_speech(ctx.input_path("audio"), params)
    image, resize_step = prepare_image(ctx.input_path("source_image"), backend, params)
    steps.append(resize_step)
    about = f"{speech.frames / speech.fps:.1f} s of speech at {speech.fps} fps"
    check_talk_work(ctx.node_id, speech.frames, params, get_settings().max_talk_frame_steps, about)
    # with the videos the upscales after this node will make of it, which would otherwise fail only once it rendered
    size = (image.shape[1], image.shape[0])
    made = Video(size, speech.frames, about, *talk_levers(ctx.node_id, backend.name, params.resolution))
    check_videos(ctx.node_id, made, ctx.derived_videos, get_settings())
    return speech, image, steps, warnings


def _resumed(
    ctx: TaskContext,
    backend: TalkBackend,
    state: Any,
    params: InfiniteTalkParams,
    windows: list[Window],
    shape: tuple[int, ...],
    fps: int,
) -> tuple[WindowCheckpoints, int]:
    """The job's window checkpoints (tasks/talk_resume) and the first window this run renders: past those an
    earlier run of the same numerics finished, else 0."""
    numerics = backend.numerics(state)
    digest = fingerprint(ctx, params, backend.name, numerics, windows, shape, fps)
    checkpoints = WindowCheckpoints(ctx, digest, len(windows), numerics)
    start = checkpoints.resume(backend, state)
    if start:
        ctx.progress(0.05 + 0.9 * start / len(windows), _resume_message(start, len(windows)))
    return checkpoints, start


def _windows_meta(
    params: InfiniteTalkParams, windows: list[Window], start: int, checkpoints: WindowCheckpoints
) -> dict[str, Any]:
    return {
        "windows": {
            "frame_window_size": params.frame_window_size,
            "motion_frame": params.motion_frame,
            "count": len(windows),
            "plan": [[w.start, w.end] for w in windows],
        },
        # the first window this attempt rendered, when an earlier one had finished those before (tasks/talk_resume)
        "resumed_from_window": start or None,
        **({"checkpoint_ignored": checkpoints.ignored} if checkpoints.ignored else {}),
    }


def prepare_speech(path: Path, params: InfiniteTalkParams) -> tuple[SpeechTrack, list[dict[str, Any]], list[str]]:
    """The seed's audio chain: crop to the speech, separation (lite: a high-pass), loudness, per-frame features.
    The result lasts exactly frames / fps seconds, frames = round(cropped duration x fps)."""
    audio, sr = _named_input("audio", load_audio, path)
    steps, warnings = [], []
    bounds = speech_bounds(audio, sr)
    if bounds is None:
        warnings.append("no speech found above the silence threshold: kept the whole audio")
        bounds = (0, len(audio))
    steps.append(
        {"step": "audio_crop", "input_s": round(len(audio) / sr, 3), "start_s": bounds[0] / sr, "end_s": bounds[1] / sr}
    )
    audio = highpass(audio[bounds[0] : bounds[1]], sr)
    steps.append({"step": "speech_separation", "method": "80 Hz high-pass (lite: no source separation)"})
    if params.normalize_loudness:
        audio, loudness = normalize_loudness(audio, sr, TARGET_LUFS)
        steps.append(_loudness_step(loudness))
    else:
        steps.append({"step": "loudness_normalization", "skipped": "normalize_loudness is false"})
    frames = frame_count(len(audio) / sr, params.fps)
    if frames < 1:
        raise InputError(f"the speech lasts {len(audio) / sr:.3f} s, shorter than one frame at {params.fps} fps")
    audio = fit_length(audio, round(frames * sr / params.fps))
    features = frame_features(audio, sr, params.fps, frames)
    steps.append({"step": "audio_features", "fps": params.fps, "frames": frames, "features": ["rms", "centroid"]})
    return SpeechTrack(audio, sr, params.fps, frames, features), steps, warnings


def _loudness_step(loudness: Loudness) -> dict[str, Any]:
    step = {"step": "loudness_normalization", "standard": "ITU-R BS.1770", "target_lufs": TARGET_LUFS}
    if loudness.skipped:
        return step | {"skipped": loudness.skipped}
    assert loudness.measured_lufs is not None, "measured whenever the step was not skipped"
    return step | {
        "measured_lufs": round(loudness.measured_lufs, 2),
        "gain_db": round(loudness.gain_db, 2),
        "peak_limited": loudness.peak_limited,
    }


def prepare_image(path: Path, backend: TalkBackend, params: InfiniteTalkParams) -> tuple[np.ndarray, dict[str, Any]]:
    """The portrait at the output size the backend chooses (aspect kept, centre crop)."""
    image = _named_input("source_image", partial(load_image, max_pixels=get_settings().max_image_pixels), path)
    h0, w0 = image.shape[:2]
    fitted, rule = backend.fit_portrait(image, params)
    height, width = fitted.shape[:2]
    return fitted, {"step": "image_resize", "from": [w0, h0], "to": [width, height], "rule": rule}


def _named_input(name: str, load: Callable[[Path], Any], path: Path) -> Any:
    """Load an input; a file of the wrong kind is a one-line error that names the input."""
    try:
        return load(path)
    except InputError as err:
        raise InputError(f"infinite_talk input '{name}': {err}") from None


def combine_video(
    ctx: TaskContext,
    path: Path,
    backend: TalkBackend,
    state: Any,
    windows: list[Window],
    speech: SpeechTrack,
    shape: tuple[int, ...],
    checkpoints: WindowCheckpoints,
) -> dict[str, Any]:
    """Render the windows the checkpoints do not hold yet, each encoded as its own chunk and checkpointed, then join
    every chunk into the video, with the speech muxed at exactly frames / fps. Each window is also published as a
    live segment as soon as it is done; returns what the live output made."""
    mux_audio = fit_length(
        resample(speech.audio, speech.sample_rate, MUX_RATE), round(speech.frames * MUX_RATE / speech.fps)
    )
    if hasattr(backend, "on_step"):  # diffusion backends report every denoising step inside a window
        backend.on_step = lambda index, done, total: ctx.progress(
            0.05 + 0.9 * (index + done / total) / len(windows),
            f"window {index + 1}/{len(windows)}, step {done}/{total}",
        )
    longest = max(len(window.new_frames) for window in windows)
    todo = windows[checkpoints.done :]
    first = todo[0].new_start if todo else speech.frames
    height, width = shape[0], shape[1]
    with LiveOutput(ctx, speech.fps, width, height, longest, (mux_audio, MUX_RATE), start_frame=first) as live:
        for window in todo:
            chunk = checkpoints.chunk_path(window.index)
            with VideoWriter(chunk, speech.fps, width, height) as writer:
                _write_window(writer, live, backend.render_window(state, window), window, backend.name)
            live.cut()  # before the progress event: "window i/n" means its segment is there to play
            last = window.index == len(windows) - 1
            checkpoints.save(window.index, chunk, None if last else backend.checkpoint(state))
            ctx.progress(0.05 + 0.9 * (window.index + 1) / len(windows), f"window {window.index + 1}/{len(windows)}")
        live.finish()
    try:
        frames = join_chunks(checkpoints.chunk_paths(), path, speech.fps, audio=(mux_audio, MUX_RATE))
        if frames != speech.frames:
            raise ChunkMismatch(f"infinite_talk joined {frames} frames, expected {speech.frames}")
    except ChunkMismatch:
        checkpoints.clear()  # chunks that cannot make the video would fail every retry the same way: render anew
        raise
    return live.describe()


def _resume_message(start: int, windows: int) -> str:
    if start == windows:
        return f"all {windows} windows were rendered before: joining them"
    return f"resuming at window {start + 1}/{windows}"


def _write_window(
    writer: VideoWriter, live: LiveOutput, frames: Iterable[np.ndarray], window: Window, backend: str
) -> None:
    written = 0
    for frame in frames:
        writer.write(frame)
        live.write(frame)
        written += 1
    if written != len(window.new_frames):
        raise RuntimeError(
            f"infinite_talk backend '{backend}' gave {written} frames for window {window.index}, "
            f"expected {len(window.new_frames)}"
        )


TASK = TaskDef(name="infinite_talk", params_model=InfiniteTalkParams, run=run)
