"""The size limits on a video a job makes: its frame (SPINBOT_MAX_VIDEO_FRAME_PIXELS, and each side within what the
H.264 encoder opens) and its pixels in all (SPINBOT_MAX_VIDEO_PIXELS: frames x width x height, the work).

Nothing else bounds them: the upscale factor comes from the upscaler model's name (x8 exists), fps goes to 120 and
the speech to SPINBOT_MAX_SPEECH_SECONDS, so one job could ask for 8192x8192 frames x 36,000 frames: hours of CPU,
a huge file, and frames the encoder refuses only when it opens. Admission refuses a job whose estimated video is
over a limit (spinbot.control.budgets); infinite_talk and upscale_video check their real numbers again before they
start work, since the speech estimate is a lower bound and a portrait's header can misstate its upright size.
infinite_talk checks the videos the upscales after it will make from its own too (DerivedVideo, from the control
plane), so that a job whose real speech puts its final video over a limit fails before the talking head renders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import reduce
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from spinbot.errors import ParamsError

if TYPE_CHECKING:
    from spinbot.settings import Settings

# libx264 in yuv420p through PyAV 18's FFmpeg (libavcodec 62), tried by opening the encoder: 16384 a side opens,
# 16386 does not (x264's own limit); and FFmpeg's av_image_check_size wants (width + 128) x (height + 128) under
# 2^31 / 8, so 16384x16128 is the largest frame that opens (16384x16130 and 16384x16384 fail). The frame setting may
# not go past that frame's pixels: then every frame within it whose sides are at most 16384 passes FFmpeg's check.
H264_MAX_SIDE = 16384
H264_MAX_FRAME_PIXELS = 16384 * 16128
FRAME_SETTING = "SPINBOT_MAX_VIDEO_FRAME_PIXELS"
TOTAL_SETTING = "SPINBOT_MAX_VIDEO_PIXELS"


class VideoTooLarge(ParamsError):
    """A video whose frame or whose pixels in all are over a limit."""


def refuse_large_frame(what: str, width: int, height: int, limit: int, change: str) -> None:
    """One line where a width x height frame is over `limit` pixels or a side is past the encoder's; `what` names
    the node ("upscale_video: the upscaled video"), `change` what to change to get under it."""
    pixels = width * height
    if max(width, height) > H264_MAX_SIDE:
        raise VideoTooLarge(
            f"{what} would have {width}x{height} frames: H.264 (libx264) encodes at most {H264_MAX_SIDE} pixels a "
            f"side; {change}"
        )
    if pixels > limit:
        raise VideoTooLarge(
            f"{what} would have {width}x{height} frames ({pixels:,} pixels), over the limit of {limit:,} pixels a "
            f"frame ({FRAME_SETTING}); {change}"
        )


def refuse_many_pixels(what: str, width: int, height: int, frames: int, limit: int, about: str, change: str) -> None:
    """One line where `frames` frames of width x height are over `limit` pixels in all; `about` says where the
    frame count comes from ("about 300 s of speech at 120 fps")."""
    total = frames * width * height
    if total > limit:
        raise VideoTooLarge(
            f"{what} would be {frames:,} frames of {width}x{height} ({about}): {total:,} pixels, over the limit of "
            f"{limit:,} ({TOTAL_SETTING}); {change}"
        )


@dataclass(frozen=True)
class Video:
    """A node's video, estimated or real, and what the user can change to make it smaller."""

    size: tuple[int, int]  # width, height
    frames: int | None  # None: not known yet (no speech estimate reaches the node: its text comes from elsewhere)
    about: str  # where the frame count comes from, for the error line
    frame_levers: tuple[str, ...]  # what makes the frame smaller
    length_levers: tuple[str, ...]  # and what else makes the frames fewer


class Upscale(BaseModel):
    """An upscale_video node as the control plane knows it before it runs: the factor it will scale by (a lower
    bound where the model's own is unknown: spinbot.control.budgets.upscale_factor) and its frame_load_cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    node_id: str
    scale: int = Field(ge=1)
    frame_load_cap: int = Field(default=0, ge=0)


class DerivedVideo(BaseModel):
    """A later node's video made from a talking head's: the upscales that make it, in pipeline order (the last one's
    node makes it). Sent with infinite_talk's TaskRequest (spinbot.control.budgets.derived_videos)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    upscales: tuple[Upscale, ...] = Field(min_length=1)

    @property
    def node_id(self) -> str:
        return self.upscales[-1].node_id


def upscaled(source: Video, step: Upscale) -> Video:
    """The video `step` makes of `source`: its frame times the factor, cut to even sides as upscale_video cuts it,
    as many frames (or frame_load_cap)."""
    width, height = source.size
    size = (width * step.scale // 2 * 2, height * step.scale // 2 * 2)
    frames, about = source.frames, source.about
    if frames is not None and 0 < step.frame_load_cap < frames:
        frames, about = step.frame_load_cap, f"{step.node_id}.frame_load_cap"
    frame_levers = upscale_levers(step.node_id, step.scale) + source.frame_levers
    return replace(source, size=size, frames=frames, about=about, frame_levers=frame_levers)


def derived(source: Video, upscales: Iterable[Upscale]) -> Video:
    """The video these upscales make of `source`, one after the other."""
    return reduce(upscaled, upscales, source)


def check_videos(node_id: str, video: Video, later: Iterable[DerivedVideo], settings: Settings) -> None:
    """VideoTooLarge for node `node_id`'s video, or for the first of the `later` videos made from it, that is over a
    limit: "upscale_video: the video would be ..." names the node whose video it is."""
    check_video(f"{node_id}: the video", video.size, video.frames, settings, video.about, _levers(video))
    for each in later:
        made = derived(video, each.upscales)
        check_video(f"{each.node_id}: the video", made.size, made.frames, settings, made.about, _levers(made))


def _levers(video: Video) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return video.frame_levers, video.length_levers


def check_video(
    what: str,
    size: tuple[int, int],
    frames: int | None,
    settings: Settings,
    about: str,
    levers: tuple[tuple[str, ...], tuple[str, ...]],
) -> None:
    """Both limits of `settings` on a video of `frames` frames (None: not known yet, the frame alone) of `size`.
    `levers`: what makes the frame smaller, and what else makes the frames fewer ("lower infinite_talk.fps"), for
    the line."""
    frame_levers, length_levers = levers
    refuse_large_frame(what, *size, settings.max_video_frame_pixels, to_get_under(frame_levers))
    if frames is not None:
        total_change = to_get_under(length_levers + frame_levers)
        refuse_many_pixels(what, *size, frames, settings.max_video_pixels, about, total_change)


def to_get_under(levers: tuple[str, ...]) -> str:
    """ "to get under it: a, b or c" """
    if not levers:
        return "no param of the job makes it smaller (the limit is the server's)"
    listed = levers[0] if len(levers) == 1 else f"{', '.join(levers[:-1])} or {levers[-1]}"
    return f"to get under it: {listed}"


def talk_levers(node_id: str, backend: str, resolution: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What makes a talking head's frame smaller (native: its resolution bucket set; lite: the portrait, which is
    never enlarged), and its frames fewer."""
    if backend == "native":
        frame = (f"set {node_id}.resolution to 480p",) if resolution != "480p" else ()
    else:
        frame = ("use a smaller portrait",)
    return frame, (f"lower {node_id}.fps", "make the script shorter")


def upscale_levers(node_id: str, scale: int) -> tuple[str, ...]:
    return (f"use an upscaler of a smaller factor ({node_id}.model_name_0 is x{scale})",) if scale > 1 else ()
