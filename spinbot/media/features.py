"""Speech preparation for the talking head: crop to the speech, a light clean-up, loudness, per-frame features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

BLOCK_S = 0.01  # energy blocks for finding where the speech starts and ends


def speech_bounds(
    audio: np.ndarray, sr: int, above_noise_db: float = 10.0, floor_db: float = -55.0, margin_s: float = 0.1
) -> tuple[int, int] | None:
    """Sample range [start, end) of the speech, widened by a margin; None when nothing rises above the threshold.

    A 10 ms block counts as speech when it is `above_noise_db` louder than the recording's noise floor (its
    quietest tenth) and than an absolute floor; the threshold stays well under the loudest block, so a recording
    with no pauses is never cut into."""
    hop = max(1, int(sr * BLOCK_S))
    blocks = len(audio) // hop
    if blocks == 0:
        return None
    energy = np.mean(np.square(audio[: blocks * hop].reshape(blocks, hop), dtype=np.float64), axis=1)
    level_db = 10.0 * np.log10(energy + 1e-12)
    noise_db = float(np.percentile(level_db, 10))
    threshold = min(max(floor_db, noise_db + above_noise_db), float(level_db.max()) - 25.0)
    active = np.flatnonzero(level_db > threshold)
    if active.size == 0 or level_db.max() <= floor_db:
        return None
    margin = int(margin_s * sr)
    return max(0, int(active[0]) * hop - margin), min(len(audio), (int(active[-1]) + 1) * hop + margin)


def highpass(audio: np.ndarray, sr: int, cutoff_hz: float = 80.0) -> np.ndarray:
    """Remove rumble and DC below the voice's range (zero phase, so nothing shifts in time)."""
    sos = signal.butter(2, cutoff_hz, btype="highpass", fs=sr, output="sos")
    if len(audio) <= 3 * (2 * len(sos) + 1):  # too short for sosfiltfilt's edge padding
        return audio.astype(np.float32, copy=True)
    return signal.sosfiltfilt(sos, audio).astype(np.float32)


@dataclass(frozen=True)
class Loudness:
    measured_lufs: float | None
    gain_db: float
    peak_limited: bool
    skipped: str | None = None


def normalize_loudness(
    audio: np.ndarray, sr: int, target_lufs: float = -23.0, peak_dbfs: float = -1.0
) -> tuple[np.ndarray, Loudness]:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm) brought to target; the gain is lowered if a peak would
    pass `peak_dbfs`, so nothing clips."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sr)
    if len(audio) < int(meter.block_size * sr):
        return audio, Loudness(None, 0.0, False, skipped="shorter than one 400 ms BS.1770 block")
    measured = float(meter.integrated_loudness(audio.astype(np.float64)))
    if not np.isfinite(measured):
        return audio, Loudness(None, 0.0, False, skipped="silent")
    gain = 10.0 ** ((target_lufs - measured) / 20.0)
    peak = float(np.max(np.abs(audio))) * gain
    ceiling = 10.0 ** (peak_dbfs / 20.0)
    limited = peak > ceiling
    if limited:
        gain *= ceiling / peak
    return (audio * gain).astype(np.float32), Loudness(measured, 20.0 * np.log10(gain), limited)


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim, or pad with silence, to exactly `samples`."""
    if len(audio) >= samples:
        return audio[:samples]
    return np.concatenate([audio, np.zeros(samples - len(audio), dtype=audio.dtype)])


@dataclass(frozen=True)
class FrameFeatures:
    """One value per video frame, measured on the sound heard while that frame is on screen."""

    fps: int
    rms: np.ndarray  # linear RMS
    centroid_hz: np.ndarray  # spectral centroid: low for rounded vowels (o, u), high for spread ones and sibilants

    def __len__(self) -> int:
        return len(self.rms)


def frame_features(audio: np.ndarray, sr: int, fps: int, frames: int) -> FrameFeatures:
    """RMS and spectral centroid for frames [0, frames); frame i hears samples [i*sr/fps, (i+1)*sr/fps)."""
    if frames < 1:
        raise ValueError(f"frame_features needs at least one frame, got {frames}")
    length = int(np.ceil(sr / fps))
    starts = np.round(np.arange(frames) * sr / fps).astype(np.int64)
    padded = fit_length(audio.astype(np.float32), int(starts[-1]) + length)
    segments = padded[starts[:, None] + np.arange(length)[None, :]]
    rms = np.sqrt(np.mean(np.square(segments, dtype=np.float64), axis=1))
    n_fft = 1 << int(np.ceil(np.log2(length)))
    power = np.abs(np.fft.rfft(segments * np.hanning(length), n=n_fft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    total = power.sum(axis=1)
    centroid = np.where(total > 1e-12, power @ freqs / np.maximum(total, 1e-12), 0.0)
    return FrameFeatures(fps, rms.astype(np.float32), centroid.astype(np.float32))
