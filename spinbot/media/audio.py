"""Audio I/O (soundfile, PyAV for compressed formats), header probes, resampling (soxr) and level helpers."""

from __future__ import annotations

import math
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from spinbot.errors import InputError, InputTooLarge, InputTooSmall, UnusableFile
from spinbot.media.paths import check_input_file

# Beyond any microphone or codec a voice sample comes from; a header claiming more is an attempt on memory
# (seconds x rate x channels float32 samples are allocated by the decode).
MAX_SAMPLE_RATE = 384_000
# Telephone speech. Below it there is no voice to measure: a 100 Hz sample passed every check, then failed in the
# speech task (Praat's pitch analysis).
MIN_SAMPLE_RATE = 8_000
MAX_CHANNELS = 8
# What to do with a voice over the limit: the lite backend measures pitch and rate on a few sentences, and F5-TTS
# clones from at most 12 s.
CUT_VOICE = "cut 10 to 30 s of clear speech from it"
_UNKNOWN_FRAMES = 2**62  # libsndfile reports about 2**63 frames for a stream whose header leaves the length open
# FFmpeg parses ID3v2 tags at the start of any file, inside ADTS (.aac) streams and in WAV/AIFF chunks, and inflates
# their zlib-compressed frames into metadata it keeps: a 534 KB .aac with eight compressed TXXX frames took 1.2 GB
# (a 50 MB upload: about 100 GB). A voice needs a few KB of tags; more is refused before FFmpeg opens the file.
MAX_ID3_BYTES = 64 * 1024
# A header FFmpeg parses (its ff_id3v2_match, and versions 2 to 4), wherever it is in the file.
_ID3_HEADER = re.compile(rb"ID3[\x02-\x04][\x00-\xfe][\x00-\xff][\x00-\x7f]{4}")


@dataclass(frozen=True)
class AudioHeader:
    format: str
    sample_rate: int
    channels: int
    seconds: float | None  # None: the header does not say; the decode then stops at the limit itself


def probe_audio(path: Path | str) -> AudioHeader:
    """Format, rate, channels and duration from the file's header (libsndfile), else from the container's header
    as FFmpeg probes it (PyAV); no sample is decoded."""
    path = Path(path)
    check_input_file(path, "audio")
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - not a libsndfile format (mp3 in some builds, m4a, a video's audio): FFmpeg
        return _probe_with_av(path)
    known = 0 < info.frames < _UNKNOWN_FRAMES and info.samplerate > 0
    seconds = info.frames / info.samplerate if known else None
    return AudioHeader(info.format, int(info.samplerate), int(info.channels), seconds)


def _probe_with_av(path: Path) -> AudioHeader:
    import av

    from spinbot.media.video import open_input

    refuse_id3_bombs(path)
    try:
        with open_input(path) as container:
            if not container.streams.audio:
                if container.streams.video:
                    raise UnusableFile(path, "a video with no sound track: give a recording of the narrator's voice")
                raise InputError(f"not a readable audio file: {path}")
            stream = container.streams.audio[0]
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            ctx = stream.codec_context
            return AudioHeader(container.format.name, int(ctx.sample_rate or 0), int(ctx.channels or 0), seconds)
    except (av.error.FFmpegError, ValueError, OSError):
        raise InputError(f"not a readable audio file: {path}") from None


def refuse_id3_bombs(path: Path) -> None:
    """InputTooLarge when the file's ID3v2 tags (their sizes as their headers claim, within the file) hold more
    than MAX_ID3_BYTES: to run before FFmpeg reads a file that libsndfile could not."""
    if path.stat().st_size == 0:
        return  # mmap refuses an empty file; FFmpeg finds nothing in it
    total = 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for found in _ID3_HEADER.finditer(data):  # mmap: the file searched without reading it into memory
            a, b, c, d = found.group()[6:]  # the tag's size, 7 bits a byte ("syncsafe")
            size = a << 21 | b << 14 | c << 7 | d
            total += min(size, len(data) - found.end())
            if total > MAX_ID3_BYTES:
                raise InputTooLarge(
                    f"the audio carries more than {MAX_ID3_BYTES // 1024} KiB of ID3 tags (remove its tags or "
                    "cover art, or send it as WAV or FLAC)"
                )


def check_voice_header(header: AudioHeader, max_seconds: float) -> None:
    """Refuse, before any decode, audio whose header claims more than a voice sample may hold."""
    if header.seconds is not None and header.seconds > max_seconds:
        raise InputTooLarge(
            f"the audio lasts {header.seconds:.1f} s, over the limit of {max_seconds:g} s (SPINBOT_MAX_VOICE_SECONDS)"
            f": {CUT_VOICE}"
        )
    if not MIN_SAMPLE_RATE <= header.sample_rate <= MAX_SAMPLE_RATE:  # a limit, like seconds: its line is passed on
        out_of_range = InputTooSmall if header.sample_rate < MIN_SAMPLE_RATE else InputTooLarge
        raise out_of_range(
            f"the audio's sample rate {header.sample_rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    if not 0 < header.channels <= MAX_CHANNELS:
        raise InputError(f"the audio has {header.channels} channels; at most {MAX_CHANNELS} are accepted")


def load_voice(path: Path | str, *, max_seconds: float, sr: int | None = None) -> tuple[np.ndarray, int]:
    """A narrator voice sample: its header checked against max_seconds (the caller's SPINBOT_MAX_VOICE_SECONDS)
    first, then a decode that also stops at that length (a header may not tell, or may lie)."""
    check_voice_header(probe_audio(path), max_seconds)
    audio, rate = load_audio(path, sr, max_seconds=max_seconds)
    # A float WAV may hold NaN or infinity (and a double's 1e200 is infinity in float32): the silence check read a
    # NaN voice as silent, and F5-TTS scales its reference by the RMS, which one infinite sample makes infinite.
    if not np.isfinite(audio).all():
        raise UnusableFile(
            path, "some of its samples are not numbers (NaN or infinity): export it again as 16-bit PCM WAV or FLAC"
        )
    return audio, rate


def load_audio(
    path: Path | str, sr: int | None = None, mono: bool = True, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode any audio file to float32 (mono by default), optionally resampled to `sr`; with `max_seconds`, the
    decode stops with an error as soon as the audio passes that length."""
    path = Path(path)
    check_input_file(path, "audio")
    try:
        audio, rate = _read_with_soundfile(path, max_seconds, mono)
    except (InputTooLarge, MemoryError):  # MemoryError: past the sandbox's memory limit, which says so
        raise
    except Exception:  # noqa: BLE001 - anything libsndfile cannot read goes to FFmpeg, which says if it can
        audio, rate = _decode_with_av(path, max_seconds, mono)
    if audio.size == 0:
        raise InputError(f"audio file has no samples: {path}")
    if sr is not None and sr != rate:
        audio, rate = resample(audio, rate, sr), sr
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def _read_with_soundfile(path: Path, max_seconds: float | None, mono: bool) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        limit = -1 if max_seconds is None else math.ceil(max_seconds * rate)
        frames = -1 if limit < 0 else limit + 1
        data = _read_mono(f, frames) if mono else f.read(frames=frames, dtype="float32", always_2d=True)
    if 0 <= limit < len(data):
        raise _too_long(max_seconds)
    return data, rate


# Frames a block: half a MB of float32 at the 8 channels a file may have.
_BLOCK_FRAMES = 16_384


def _read_mono(f: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to `frames` frames (all when negative) as float32 mono. Beyond stereo, read and averaged a block at a
    time: the decode costs the mono result, not rate x channels x seconds of float32 (a 200 KB FLAC of 60 s at
    384 kHz in 8 channels took 740 MB before it was averaged). Mono and stereo are read whole, as always: at most
    twice the result, and libsndfile's mp3 decode rounds a few samples differently when read by blocks."""
    if f.channels <= 2:
        return f.read(frames=frames, dtype="float32", always_2d=True).mean(axis=1)
    left = f.frames - f.tell()  # what f.read would read: no more than the header's length
    mono = np.empty(left if frames < 0 else min(frames, left), np.float32)
    done = 0
    for block in f.blocks(blocksize=_BLOCK_FRAMES, frames=len(mono), dtype="float32", always_2d=True):
        mono[done : done + len(block)] = block.mean(axis=1)
        done += len(block)
    return mono[:done]


def _too_long(max_seconds: float | None) -> InputTooLarge:
    return InputTooLarge(
        f"the audio lasts more than the limit of {max_seconds:g} s (SPINBOT_MAX_VOICE_SECONDS): {CUT_VOICE}"
    )


def _decode_with_av(path: Path, max_seconds: float | None, mono: bool) -> tuple[np.ndarray, int]:
    """Compressed formats soundfile cannot read (mp3, m4a, the audio of a video) through FFmpeg."""
    import av

    from spinbot.media.video import AudioTooLong, read_audio

    refuse_id3_bombs(path)
    try:
        decoded = read_audio(path, max_seconds=max_seconds, mono=mono)
    except AudioTooLong:
        raise _too_long(max_seconds) from None
    except (av.error.FFmpegError, ValueError, OSError):
        raise InputError(f"not a readable audio file: {path}") from None
    if decoded is None:
        raise InputError(f"not a readable audio file: {path}")
    return decoded


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, sr_in, sr_out, quality="HQ").astype(np.float32)


def write_wav(path: Path | str, audio: np.ndarray, sr: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16")
    return path


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def duration(path: Path | str) -> float:
    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def active_bounds(audio: np.ndarray, sr: int, floor_db: float = -50.0, frame_s: float = 0.01) -> tuple[int, int]:
    """[start, end) samples from the first to the last 10 ms frame within floor_db of the loudest; (0, 0) if silent."""
    frame = max(1, int(frame_s * sr))
    count = -(-len(audio) // frame)
    padded = np.zeros(count * frame, np.float64)
    padded[: len(audio)] = audio
    level = np.sqrt(np.mean(padded.reshape(count, frame) ** 2, axis=1))
    if count == 0 or level.max() <= 0:
        return 0, 0
    loud = np.flatnonzero(level >= level.max() * 10 ** (floor_db / 20))
    return int(loud[0] * frame), int(min(len(audio), (loud[-1] + 1) * frame))


def crossfade_concat(chunks: list[np.ndarray], sr: int, fade_s: float) -> tuple[np.ndarray, list[int]]:
    """Join chunks, each overlapping the next by fade_s with an equal-power (sine/cosine) cross-fade, so the
    summed power stays level through the join. Returns the audio and the sample where each join is centred."""
    out = np.asarray(chunks[0], dtype=np.float32)
    joins = []
    for chunk in chunks[1:]:
        chunk = np.asarray(chunk, dtype=np.float32)
        overlap = min(round(fade_s * sr), len(out), len(chunk))
        t = (np.arange(overlap, dtype=np.float64) + 0.5) / max(overlap, 1)
        mixed = out[len(out) - overlap :] * np.cos(0.5 * np.pi * t) + chunk[:overlap] * np.sin(0.5 * np.pi * t)
        joins.append(len(out) - overlap // 2)
        out = np.concatenate([out[: len(out) - overlap], mixed.astype(np.float32), chunk[overlap:]])
    return out, joins


def limit_peaks(
    audio: np.ndarray, sr: int, ceiling: float = 0.95, lookahead_s: float = 0.005, release_s: float = 0.05
) -> np.ndarray:
    """Look-ahead peak limiter: a smooth gain that starts falling lookahead_s before a peak and holds for
    release_s after it, so no sample exceeds ceiling and nothing is clipped."""
    ahead, hold = max(1, int(lookahead_s * sr)), max(1, int(release_s * sr))
    hold = max(hold, ahead)
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(audio.astype(np.float64)), 1e-12))
    if need.min() >= 1.0:
        return audio.astype(np.float32, copy=False)
    from scipy.ndimage import minimum_filter1d

    # Minimum over [n - hold, n + ahead]: every sample within `ahead` of a peak gets at most that peak's gain,
    # and a window of 2 * ahead + 1 averaged around the peak stays at or below it.
    size = hold + ahead + 1
    gain = minimum_filter1d(need, size=size, origin=hold - size // 2, mode="nearest")
    window = np.hanning(2 * ahead + 3)[1:-1]
    gain = np.convolve(np.pad(gain, ahead, mode="edge"), window / window.sum(), mode="valid")
    return (audio * gain).astype(np.float32)


def normalize_rms(audio: np.ndarray, sr: int, target: float, ceiling: float = 0.95) -> np.ndarray:
    """Scale to the target RMS and limit peaks to ceiling. The limiter takes a little level away, so the gain is
    raised again until the RMS is on target, or until more gain only brings more limiting (a target too loud for
    the ceiling): check the result's RMS."""
    level = rms(audio)
    if level == 0.0:
        return audio.astype(np.float32, copy=False)
    gain, previous = target / level, 0.0
    for _ in range(10):
        out = limit_peaks(audio * gain, sr, ceiling)
        achieved = rms(out)
        if abs(achieved / target - 1.0) < 0.002 or achieved < previous * 1.005:
            break
        gain, previous = gain * target / achieved, achieved
    return out
