"""The size limits on a video a job makes: its frame (SPINBOT_MAX_VIDEO_FRAME_PIXELS, and each side within what the
H.264 encoder opens) and its pixels in all (SPINBOT_MAX_VIDEO_PIXELS: frames x width x height, the work).

Nothing else bounds them: the upscale factor comes from the upscaler model's name (x8 exists), fps goes to 120 and
the speech to SPINBOT_MAX_SPEECH_SECONDS, so one job could ask for 8192x8192 frames x 36,000 frames: hours of CPU,
a huge file, and frames the encoder refuses only when it opens. Admission refuses a job whose estimated video is
over a limit (spinbot.control.budgets); infinite_talk and upscale_video check their real numbers again before they
start work, since the speech estimate is a lower bound and a portrait's header can misstate its upright size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
