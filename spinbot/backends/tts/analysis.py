"""Measurements of a voice sample with Praat (parselmouth): median pitch, where speech is, speaking rate.

Used to adapt the lite voice to the narrator voice, and by the tests to check that it was adapted.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import parselmouth
from parselmouth.praat import call
from scipy.signal import find_peaks

from spinbot.errors import InputError

log = logging.getLogger(__name__)

# Praat's usual pitch search range for speech, widened down for low male voices.
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
# Silence: quieter than 25 dB below the loudest part; pauses shorter than 0.2 s (stop closures, breaths
# between words) count as speech, so the rate measured is the articulation rate between real pauses.
SILENCE_DB = -25.0
MIN_PAUSE_S = 0.2
MIN_SOUND_S = 0.08
# English averages about 1.4 syllables per word (the Beckett sample: 17 syllables in 12 words).
SYLLABLES_PER_WORD = 1.4


@dataclass(frozen=True)
class VoiceAnalysis:
    f0_hz: float | None  # median pitch of the voiced frames; None when nothing is voiced
    words_per_minute: float | None  # articulation rate (long pauses excluded); None when there is no speech
    rate_source: str  # "ref_text" (words counted) or "syllable nuclei" (estimated from the audio)
    speech_seconds: float
    duration_seconds: float

    def as_meta(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sound(audio: np.ndarray, sr: int) -> parselmouth.Sound:
    return parselmouth.Sound(np.asarray(audio, dtype=np.float64), float(sr))


def median_f0(audio: np.ndarray, sr: int) -> float | None:
    pitch = _sound(audio, sr).to_pitch(pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else None


def speech_intervals(audio: np.ndarray, sr: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of speech, by Praat's silence detector."""
    if len(audio) < 0.1 * sr or not np.any(audio):
        return []
    grid = call(
        _sound(audio, sr),
        "To TextGrid (silences)",
        100,
        0.0,
        SILENCE_DB,
        MIN_PAUSE_S,
        MIN_SOUND_S,
        "silent",
        "sounding",
    )
    return [
        (call(grid, "Get start time of interval", 1, i), call(grid, "Get end time of interval", 1, i))
        for i in range(1, call(grid, "Get number of intervals", 1) + 1)
        if call(grid, "Get label of interval", 1, i) == "sounding"
    ]


def count_syllables(audio: np.ndarray, sr: int, intervals: list[tuple[float, float]]) -> int:
    """Syllable nuclei (after de Jong & Wempe, 2009): intensity peaks standing 2 dB above their surroundings,
    within 25 dB of the loudest, voiced, and inside speech."""
    if not intervals:
        return 0
    sound = _sound(audio, sr)
    intensity = sound.to_intensity(minimum_pitch=100)
    level, times = intensity.values[0], intensity.xs()
    pitch = sound.to_pitch(pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    peaks, _ = find_peaks(level, prominence=2.0, height=level.max() - 25.0)
    return sum(
        1
        for p in peaks
        if any(s <= times[p] <= e for s, e in intervals) and np.isfinite(pitch.get_value_at_time(times[p]))
    )


def analyse_voice(audio: np.ndarray, sr: int, ref_text: str = "") -> VoiceAnalysis:
    """Median pitch and articulation rate of a voice sample; the rate from its transcript when there is one. A
    sample Praat cannot measure is a one-line error in the user's words: Praat's own messages run over lines and
    speak of its analyses (at 100 Hz: "Analysis window too short." over "Sound: pitch analysis not performed.")."""
    if len(audio) < 0.1 * sr:
        raise InputError(f"narrator voice is too short ({len(audio) / sr:.2f} s); give a few seconds of speech")
    try:
        return _measure(audio, sr, ref_text)
    except parselmouth.PraatError as err:
        log.warning("Praat could not measure the narrator voice", extra={"error": " ".join(str(err).split())})
        raise InputError(
            f"the narrator voice ({len(audio) / sr:.2f} s at {sr} Hz) could not be measured for pitch and speaking "
            "rate; give a few seconds of clear speech"
        ) from None


def _measure(audio: np.ndarray, sr: int, ref_text: str) -> VoiceAnalysis:
    intervals = speech_intervals(audio, sr)
    speech_s = sum(e - s for s, e in intervals)
    words = len(ref_text.split())
    if words:
        source, count = "ref_text", float(words)
    else:
        source, count = "syllable nuclei", count_syllables(audio, sr, intervals) / SYLLABLES_PER_WORD
    wpm = 60.0 * count / speech_s if speech_s >= 0.3 and count > 0 else None
    return VoiceAnalysis(median_f0(audio, sr), wpm, source, speech_s, len(audio) / sr)
