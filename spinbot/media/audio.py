"""Audio I/O (soundfile, PyAV for compressed formats), resampling (soxr) and level helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from spinbot.errors import InputError


def load_audio(path: Path | str, sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode any audio file to float32 (mono by default), optionally resampled to `sr`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception:
        data, rate = _decode_with_av(path)
    if data.size == 0:
        raise InputError(f"audio file has no samples: {path}")
    audio = data.mean(axis=1) if mono else data
    if sr is not None and sr != rate:
        audio, rate = resample(audio, rate, sr), sr
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def _decode_with_av(path: Path) -> tuple[np.ndarray, int]:
    """Compressed formats soundfile cannot read (mp3, m4a, the audio of a video) through FFmpeg."""
    import av

    from spinbot.media.video import read_audio

    try:
        decoded = read_audio(path)
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
        overlap = min(int(round(fade_s * sr)), len(out), len(chunk))
        t = (np.arange(overlap, dtype=np.float64) + 0.5) / max(overlap, 1)
        mixed = out[len(out) - overlap:] * np.cos(0.5 * np.pi * t) + chunk[:overlap] * np.sin(0.5 * np.pi * t)
        joins.append(len(out) - overlap // 2)
        out = np.concatenate([out[: len(out) - overlap], mixed.astype(np.float32), chunk[overlap:]])
    return out, joins


def limit_peaks(audio: np.ndarray, sr: int, ceiling: float = 0.95, lookahead_s: float = 0.005,
                release_s: float = 0.05) -> np.ndarray:
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
