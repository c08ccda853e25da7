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
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"not an audio file (no audio stream): {path}")
            stream = container.streams.audio[0]
            chunks = [f.to_ndarray(format="fltp") for f in container.decode(stream)]
            rate = stream.codec_context.sample_rate
    except InputError:
        raise
    except Exception:
        raise InputError(f"not a readable audio file: {path}") from None
    if not chunks:
        raise InputError(f"audio file has no samples: {path}")
    planar = np.concatenate([c.reshape(c.shape[0], -1) for c in chunks], axis=1)
    return planar.T.astype(np.float32), int(rate)


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
