"""upscale_video: video -> 2x video with faces restored, streamed in batches, audio muxed back.

The seed's workflow: load video and audio, process the frames in batches (upscale each frame, restore its faces),
concatenate the upscaled chunks and mux them with the original audio. Here the chunks are concatenated by
encoding each batch as soon as it is done, so memory holds one batch, never the video.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from spinbot.backends.upscale.base import UpscaleBackend
from spinbot.errors import InputError, ParamsError
from spinbot.media.faces import Box
from spinbot.media.video import VideoWriter, frame_rate, iter_frames, probe, read_audio
from spinbot.settings import get_settings
from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams, ignored_params
from spinbot.tasks.live import LiveOutput
from spinbot.tasks.model_files import model_folders
from spinbot.tasks.video_budget import check_video, upscale_levers

# Faces are detected on every DETECT_EVERY-th frame and their boxes reused in between (0.4 s at 25 fps: a
# talking head moves little in that time, and the padded, feathered face region absorbs it). A detection that
# finds nothing keeps the last boxes for HOLD_MISSES more detections, so one missed frame does not make the
# restoration flicker off and on.
DETECT_EVERY = 10
HOLD_MISSES = 2
# The upscaled frames one batch may hold (RGB, 3 bytes a pixel): batch_size goes up to 10,000, and a batch holds its
# input and its upscaled frames at once (a native backend a few batches, between its threads), so a client's
# batch_size of 10,000 held a 300-second video whole (about 3.8 MiB a 1024x1024 frame: 28 GiB), and at an 8x factor a
# few hundred frames were past any machine. Fewer frames a batch change no frame of the output.
BATCH_BYTES = 1 << 30
# The face detectors the native backend loads (spinbot.backends.upscale.files.DETECTOR_FILES).
FaceDetector = Literal["retinaface_resnet50"]


class AIUpscalerParams(TaskParams):
    MODEL_FOLDERS = model_folders("upscale_video")
    model_name_0: str = Field(
        default="RealESRGAN_x2.pth",
        description="Upscaler model file, in upscale_models/; its name gives the factor (x2, x4).",
    )
    model_name_1: str = Field(
        default="codeformer.pth", description="Face restoration model file, in facerestore_models/."
    )
    batch_size: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Frames processed at a time (memory use; at most 1 GiB of upscaled frames).",
    )
    facedetection: FaceDetector = Field(
        default="retinaface_resnet50", description="Face detector that finds the faces to restore."
    )
    codeformer_fidelity: float = Field(
        default=1, ge=0, le=1, description="Face restoration: 1 keeps closest to the input, 0 restores the most."
    )
    # 11 hours at 25 fps: far past any job's video (SPINBOT_MAX_SPEECH_SECONDS), and an exact float wherever it goes
    frame_load_cap: int = Field(default=0, ge=0, le=1_000_000, description="Upscale at most this many frames (0: all).")


class FaceTrack:
    """Face boxes for each frame in order, detecting only every `every`-th frame."""

    def __init__(
        self, detect: Callable[[np.ndarray], list[Box]], every: int = DETECT_EVERY, hold_misses: int = HOLD_MISSES
    ):
        self._detect = detect
        self._every = every
        self._hold_misses = hold_misses
        self._frame = 0
        self._misses = 0
        self._boxes: list[Box] = []

    def boxes(self, frame: np.ndarray) -> list[Box]:
        if self._frame % self._every == 0:
            self._update(self._detect(frame))
        self._frame += 1
        return self._boxes

    def _update(self, found: list[Box]) -> None:
        if found:
            self._boxes, self._misses = found, 0
            return
        self._misses += 1
        if self._misses > self._hold_misses:
            self._boxes = []


def batched(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    iterator = iter(frames)
    while batch := list(islice(iterator, size)):
        yield batch


def scale_box(box: Box, scale: int) -> Box:
    return Box(box.x * scale, box.y * scale, box.w * scale, box.h * scale)


def source_audio(path: Path, fps: Fraction, frame_cap: int) -> tuple[np.ndarray, int] | None:
    """The input's audio, cut to the duration of `frame_cap` frames when a cap shortens the video."""
    audio = read_audio(path)
    if audio is None or not frame_cap:
        return audio
    samples, rate = audio
    return samples[: round(frame_cap / fps * rate)], rate


def run(ctx: TaskContext, params: AIUpscalerParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend

    backend = get_backend("upscale_video")
    backend.load(params)
    source = ctx.input_path("video")
    info = probe(source)
    total = min(info.frames, params.frame_load_cap or info.frames)
    if total == 0:
        raise InputError(f"video has no frames: {source.name}")
    fps = frame_rate(source)
    # H.264 in yuv420p needs even sizes; only an odd-sized input at an odd factor (x3) loses its last pixel.
    width, height = info.width * backend.scale // 2 * 2, info.height * backend.scale // 2 * 2
    _check_budget(ctx.node_id, (width, height), total, backend.scale, fps)
    asked, params = params.batch_size, held_batch(params, width, height)
    out_path = ctx.output_path("upscaled.mp4")
    audio = source_audio(source, fps, params.frame_load_cap)
    with (
        VideoWriter(out_path, fps, width, height, audio=audio) as writer,
        LiveOutput(ctx, fps, width, height, params.batch_size, audio) as live,
    ):
        frames, restored = upscale_stream(ctx, backend, params, source, total, writer, (width, height), live=live)
        live.finish()
    key = ctx.save("upscaled.mp4", out_path, content_type="video/mp4")
    return NodeOutput(
        artifacts={"video": key},
        meta={
            "backend": backend.name,
            "scale": backend.scale,
            "frames": frames,
            "batch_size": params.batch_size,
            "size": [width, height],
            "faces_restored": restored,  # face restorations summed over frames
            "face_detection_every": getattr(backend, "face_detection_every", DETECT_EVERY),
            "ignored_params": ignored_params(params, backend.honoured),
            "live": live.describe(),
            "warnings": [_batch_warning(asked, params.batch_size, width, height)] if asked > params.batch_size else [],
        },
    )


def _check_budget(node_id: str, size: tuple[int, int], frames: int, scale: int, fps: Fraction) -> None:
    """The upscaled video within the size limits (tasks/video_budget), before the first batch: admission estimated
    it from the portrait's header, the speech's estimate (a lower bound) and the factor known before the model loads
    (spinbot.control.budgets.upscale_factor: a worker's native model's own may differ), and infinite_talk checked it
    on its real speech with that factor."""
    about = f"{float(frames / fps):.1f} s of video at {float(fps):g} fps"
    shorter = ("make the video it upscales shorter or of a lower fps",)
    levers = (upscale_levers(node_id, scale), shorter)
    check_video(f"{node_id}: the upscaled video", size, frames, get_settings(), about, levers)


def held_batch(params: AIUpscalerParams, width: int, height: int) -> AIUpscalerParams:
    """The params with batch_size lowered to the upscaled frames of width x height that fit in BATCH_BYTES (at least
    one)."""
    fits = max(1, BATCH_BYTES // (width * height * 3))
    return params if params.batch_size <= fits else params.model_copy(update={"batch_size": fits})


def _batch_warning(asked: int, held: int, width: int, height: int) -> str:
    return (
        f"batch_size {asked} would hold {asked * width * height * 3 / 2**30:.1f} GiB of {width}x{height} frames: "
        f"batches of {held} instead (1 GiB of upscaled frames a batch)"
    )


def upscale_stream(
    ctx: TaskContext,
    backend: UpscaleBackend,
    params: AIUpscalerParams,
    source: Path,
    total: int,
    writer: VideoWriter,
    size: tuple[int, int],
    *,
    live: LiveOutput | None = None,
) -> tuple[int, int]:
    """Decode, upscale and restore batch by batch, writing each batch before decoding the next (to the video, and
    to the live output, which makes a segment of each batch). Returns the frames written and the face restorations
    made."""
    frames = iter_frames(source, params.frame_load_cap)
    results = (
        backend.stream(frames, params.codeformer_fidelity, params.batch_size)
        if hasattr(backend, "stream")
        else _batched_results(backend, params, frames)
    )
    done = restored = 0
    with closing(results):
        for frame, faces in results:
            frame = frame[: size[1], : size[0]]
            writer.write(frame)
            if live is not None:  # a segment ends by itself every batch_size frames
                live.write(frame)
            done, restored = done + 1, restored + faces
            if done % params.batch_size == 0 or done == total:
                ctx.progress(done / total, f"upscaled {done}/{total} frames")
    return done, restored


def _batched_results(
    backend: UpscaleBackend, params: AIUpscalerParams, frames: Iterator[np.ndarray]
) -> Generator[tuple[np.ndarray, int], None, None]:
    """The plain path: one batch at a time through upscale_batch and restore_faces, faces tracked between
    detections. (Backends that overlap decoding, device work and encoding provide `stream` instead.)"""
    faces = FaceTrack(backend.detect_faces)
    for batch in batched(frames, params.batch_size):
        boxes = [[scale_box(b, backend.scale) for b in faces.boxes(frame)] for frame in batch]
        for frame, frame_boxes in zip(backend.upscale_batch(batch), boxes):
            if frame_boxes:
                frame = backend.restore_faces(frame, frame_boxes, params.codeformer_fidelity)
            yield frame, len(frame_boxes)


def check(params: AIUpscalerParams) -> None:
    """Refused at submission: a model_name_0 without a factor (lite), or a model file that the native backend
    would not find in the models folder."""
    from spinbot.backends.registry import backend_name
    from spinbot.backends.upscale.base import scale_from_model_name
    from spinbot.tasks.model_files import missing_model

    if backend_name("upscale_video") != "native":
        try:
            scale_from_model_name(params.model_name_0)
        except ParamsError as err:
            raise ParamsError(f"model_name_0: {str(err).removeprefix('model_name_0 ')}") from None
        return
    for param in ("model_name_0", "model_name_1"):
        name = getattr(params, param)
        why = missing_model(get_settings().models_dir, "upscale_video", param, name)
        if why:
            raise ParamsError(f"{param}: {why}; the native upscaler needs it ({_how_to_get(param, name)})")


def _how_to_get(param: str, name: str) -> str:
    """What makes a missing model file present: `models pull` for a file with a known source, else the user."""
    from spinbot.models.manifest import source_for
    from spinbot.tasks.model_files import MODEL_SLOTS

    known = source_for(f"{MODEL_SLOTS['upscale_video'][param].folder}/{name}") is not None
    return "`spinbot models pull` fetches it" if known else "put the file there"


TASK = TaskDef(name="upscale_video", params_model=AIUpscalerParams, run=run, check=check)
