"""The motion tracks of the lite animator: per frame, how far the lips part and spread, the lids close, the head
moves and the chest breathes, all computed at once from the speech's features and a seeded random generator (so a
frame depends only on its index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinbot.backends.talk.base import SpeechTrack
from spinbot.backends.talk.face_layout import FaceLayout
from spinbot.media.features import FrameFeatures

SEED = 290381
DEFAULT_AUDIO_SCALE = 1.6  # the seed's default; at it the mouth moves as much as MotionStyle.max_gap says


@dataclass(frozen=True)
class MotionStyle:
    """How much and how fast things move, relative to the face box where a length is involved."""

    max_gap: float = 0.07  # face heights: the lip gap at full loudness at the default audio_scale
    spread: float = 0.12  # of the mouth's half-width: corners move out (bright sounds: ee, s) or in (rounded: oo)
    head_shift: float = 0.015  # face widths (and 0.6 of it in face heights): the head's slow wander, a few pixels
    head_roll_deg: float = 0.9  # the wander's roll: about a degree, as a speaker's head tilts
    nod: float = 0.012  # face heights: the head dips a little with stressed syllables
    breath: float = 0.008  # face heights: the chest's lift at each breath
    breath_period_s: float = 4.2  # a speaker's breathing: about 14 breaths a minute
    look_ahead_s: float = 0.08  # lips move slightly before the sound
    level_range_db: float = 30.0  # loudness range mapped to closed .. fully open
    silence_dbfs: float = -70.0  # quieter frames keep the mouth closed, however quiet the whole recording is
    blink_s: float = 0.15  # a blink's length
    blink_every_s: tuple[float, float] = (2.0, 6.0)  # the interval between blinks, drawn uniformly


STYLE = MotionStyle()


@dataclass(frozen=True)
class MotionTracks:
    """Per-frame amounts: lip gap and corner spread in pixels, blink 0..1, head shift (px) and roll (rad),
    breathing lift (px)."""

    gap: np.ndarray
    spread: np.ndarray
    blink: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    roll: np.ndarray
    breath: np.ndarray


def _follow(target: np.ndarray, fps: int, attack_s: float, release_s: float) -> np.ndarray:
    """One-pole smoothing, faster when rising than when falling (lips open quickly, close a little slower)."""
    up, down = 1.0 - np.exp(-1.0 / (fps * attack_s)), 1.0 - np.exp(-1.0 / (fps * release_s))
    out = np.empty_like(target)
    state = 0.0
    for i, value in enumerate(target):
        state += (up if value > state else down) * (value - state)
        out[i] = state
    return out


def mouth_opening(features: FrameFeatures, style: MotionStyle = STYLE) -> np.ndarray:
    """0..1 per frame: loudness over the last level_range_db below the loud frames, led by look_ahead_s."""
    db = 20.0 * np.log10(features.rms.astype(np.float64) + 1e-9)
    # Relative to the voice's loud frames, but never so low that near-silence would open the mouth.
    loud = max(float(np.percentile(db, 95)), style.silence_dbfs + style.level_range_db)
    level = np.clip((db - (loud - style.level_range_db)) / style.level_range_db, 0.0, 1.0) ** 1.2
    lead = round(style.look_ahead_s * features.fps)
    ahead = np.concatenate([level[lead:], np.zeros(min(lead, len(level)))])
    return _follow(ahead, features.fps, attack_s=0.03, release_s=0.06)


def lip_shape(features: FrameFeatures, opening: np.ndarray, style: MotionStyle = STYLE) -> np.ndarray:
    """-1 (rounded) .. 1 (spread) per frame, from the spectral centroid relative to the voice's own median."""
    voiced = opening > 0.2
    if not voiced.any():
        return np.zeros_like(opening)
    centroid = np.maximum(features.centroid_hz.astype(np.float64), 1.0)
    brightness = np.clip(np.log2(centroid / np.median(centroid[voiced])), -1.0, 1.0)
    lead = round(style.look_ahead_s * features.fps)
    ahead = np.concatenate([brightness[lead:], np.zeros(min(lead, len(brightness)))])
    return _follow(ahead * np.minimum(1.0, 4.0 * opening), features.fps, 0.05, 0.08)


def blinks(frames: int, fps: int, rng: np.random.Generator, style: MotionStyle = STYLE) -> np.ndarray:
    """Blinks of blink_s every 2-6 s: the lids close in 40% of the time, rest closed, and reopen."""
    times = (np.arange(frames) + 0.5) / fps
    out = np.zeros(frames)
    start = rng.uniform(0.8, 3.0)
    while start < times[-1] + style.blink_s:
        phase = (times - start) / style.blink_s
        closing = np.clip(phase / 0.4, 0.0, 1.0)
        opening = np.clip((1.0 - phase) / 0.6, 0.0, 1.0)
        out = np.maximum(out, np.minimum(1.0, 1.5 * np.minimum(closing, opening)))
        start += rng.uniform(*style.blink_every_s)
    return out


def _wander(frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Slow, smooth, zero-mean motion with unit standard deviation: a few sines of 0.07-0.4 Hz."""
    t = np.arange(frames) / fps
    freqs, phases = rng.uniform(0.07, 0.4, 3), rng.uniform(0, 2 * np.pi, 3)
    weights = np.array([1.0, 0.6, 0.35])
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) / np.sqrt(
        0.5 * np.sum(weights**2)
    )


def motion_tracks(
    speech: SpeechTrack, f: FaceLayout, audio_scale: float, seed: int = SEED, style: MotionStyle = STYLE
) -> MotionTracks:
    rng = np.random.default_rng(seed)
    fps, frames = speech.fps, speech.frames
    opening = mouth_opening(speech.features, style)
    mouth_gain = audio_scale / DEFAULT_AUDIO_SCALE
    gap = mouth_gain * style.max_gap * f.face.h * opening
    spread = mouth_gain * style.spread * f.mouth_half_width * lip_shape(speech.features, opening, style)
    emphasis = _follow(opening, fps, 0.25, 0.5)  # the head dips a little with stressed syllables
    t = np.arange(frames) / fps
    return MotionTracks(
        gap=gap.astype(np.float32),
        spread=spread.astype(np.float32),
        blink=blinks(frames, fps, rng, style).astype(np.float32),
        shift_x=(style.head_shift * f.face.w * _wander(frames, fps, rng)).astype(np.float32),
        shift_y=(
            0.6 * style.head_shift * f.face.h * _wander(frames, fps, rng) + style.nod * f.face.h * emphasis
        ).astype(np.float32),
        roll=(np.radians(style.head_roll_deg) * _wander(frames, fps, rng)).astype(np.float32),
        breath=(style.breath * f.face.h * 0.5 * (1.0 - np.cos(2 * np.pi * t / style.breath_period_s))).astype(
            np.float32
        ),
    )
