"""The checks that decode a user's file: an upload (a portrait or a voice), the portrait and narrator voice at
submission, and a job's input file the first time a task reads it (spinbot/tasks/user_files.py). They run in a
sandbox worker (spinbot/media/sandbox.py), so this module imports the decoders at its top: a worker imports it once
as it starts. Arguments and results are plain values (they cross a process boundary)."""

from __future__ import annotations

import logging
from pathlib import Path

import av  # noqa: F401 - imported once in the worker: audio.py imports it on its first compressed file
import numpy as np
from PIL import Image

from spinbot.errors import InputError, InputOutOfLimits, UnusableFile
from spinbot.media.audio import load_voice, probe_audio
from spinbot.media.features import speech_bounds
from spinbot.media.image import load_portrait, probe_image, probe_upright

log = logging.getLogger(__name__)
Image.init()  # Pillow's plugins, registered once

# The suffix an upload is stored with, from the format its content was read as (Pillow's names, then libsndfile's or
# FFmpeg's first demuxer name), never from the client's file name: it sets the Content-Type the file is served with
# (an S3 object kept the client's own, so a portrait that was also HTML, presigned for SPINBOT_S3_PUBLIC_URL, was a
# web page on that endpoint). A format not named here is stored as .bin (application/octet-stream).
STORED_SUFFIXES = {
    **{f: f".{f.lower()}" for f in ("AVIF", "BMP", "GIF", "PNG", "PPM", "TIFF", "WEBP", "MPO")},
    "JPEG": ".jpg",
    "JPEG2000": ".jp2",
    **dict.fromkeys(("WAV", "WAVEX", "RF64", "wav"), ".wav"),
    **{f: f".{f.lower()}" for f in ("FLAC", "flac", "OGG", "ogg", "MP3", "mp3", "AIFF", "aiff", "aac", "avi")},
    "mov": ".m4a",
    "matroska": ".mka",
}


def check_upload(
    kind: str, path: str, max_image_pixels: int, voice_seconds: tuple[float, float], what: str = ""
) -> str:
    """Judge the file by its content, never its name: the header against the limits first (no decode of a file
    that claims 30000x30000 or two hours), then a full decode; a voice also as a job's narrator voice is judged
    (`voice_seconds`: its shortest and longest; not silent), so that no upload is stored that every job would
    refuse. Every failure is an InputError that says why, and starts with `what` (default: "the portrait upload",
    "the voice upload"). Returns the suffix to store it with (STORED_SUFFIXES)."""
    what = what or f"the {kind} upload"
    min_voice_seconds, max_voice_seconds = voice_seconds
    voice = None
    try:
        if kind == "portrait":
            load_portrait(path, max_image_pixels)
            found = probe_image(path, max_image_pixels).format
        else:
            voice = load_voice(path, max_seconds=max_voice_seconds)
            found = probe_audio(path).format.split(",")[0]
    except InputOutOfLimits as err:  # over a limit or under one: the same class, its limit said
        raise type(err)(f"{what} is refused: {err}") from None
    except UnusableFile as err:  # what it is and what to send instead: said, without the server's path
        raise InputError(f"{what} is refused: {err.reason}") from None
    except MemoryError:
        raise  # past the sandbox's memory limit: the sandbox says so
    except Exception as err:  # noqa: BLE001 - InputError, or anything a decoder raised on a hostile file
        if not isinstance(err, InputError):
            log.warning("decoder failed on a user's file", extra={"what": what, "error": repr(err)})
        content = "an image" if kind == "portrait" else "audio"
        raise InputError(f"{what} is not {content} that can be decoded") from None
    if voice is not None:  # outside the try: its one line is said as it is
        refuse_unclonable(*voice, min_voice_seconds, what)
    return STORED_SUFFIXES.get(found, ".bin")


def check_portrait(path: str, max_pixels: int) -> None:
    """A portrait named on the CLI decodes: its own errors pass through as they are (they name the user's own file,
    on their own machine), and nothing of the decode comes back."""
    load_portrait(path, max_pixels)


def portrait_size(path: str, max_pixels: int) -> tuple[int, int]:
    """A checked portrait's upright width and height, from its header (no decode): what admission sizes the job's
    video from (spinbot.control.budgets)."""
    header = probe_upright(path, max_pixels)
    return header.width, header.height


def check_voice_sample(path: str, max_seconds: float, min_seconds: float, what: str) -> None:
    """A voice sample too long (its header, then a decode that stops at the limit: a long file is refused before it
    is read whole), too short or silent to clone; decoding errors are one line too."""
    try:
        audio, sr = load_voice(Path(path), max_seconds=max_seconds)
    except InputOutOfLimits as err:  # too large or too small, kept as it is
        raise type(err)(f"{what}: {err}") from None
    refuse_unclonable(audio, sr, min_seconds, what)


def refuse_unclonable(audio: np.ndarray, sr: int, min_seconds: float, what: str) -> None:
    """A decoded voice too short, or silent, to clone: the same line at upload and at submission."""
    seconds = len(audio) / sr
    if seconds < min_seconds:
        raise InputError(
            f"{what} lasts {seconds:.2f} s, under the minimum of {min_seconds:g} s (SPINBOT_MIN_VOICE_SECONDS)"
        )
    if speech_bounds(audio - np.mean(audio), sr) is None:  # a constant (DC) offset is no sound either
        raise InputError(f"{what} is silent: nothing in it rises above the noise floor")
