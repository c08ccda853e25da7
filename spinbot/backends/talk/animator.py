"""The lite infinite_talk backend: a 2-D animator of the portrait on the CPU, with no model weights.

Every frame is one cv2.remap of the portrait through a displacement field composed from parts precomputed in
`prepare` (jaw and lips, lip shape, eyelids, head motion, breathing), plus a mouth cavity drawn between the lips as
they part. The motion tracks for the whole video are computed in `prepare` too, so a frame depends only on its
index: the output is the same whatever the window plan, and deterministic for the same inputs.

Sign convention: a displacement field D is where each output pixel samples the portrait (out(p) = img(p + D(p))),
so content moves by -D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import cv2
import numpy as np

from spinbot.backends.talk.base import SpeechTrack
from spinbot.media.faces import Box, detect_eyes, detect_faces, face_candidates
from spinbot.media.features import FrameFeatures
from spinbot.media.image import fit_size, resize_to
from spinbot.settings import get_settings
from spinbot.tasks.windows import Window

log = logging.getLogger(__name__)

SEED = 290381
DEFAULT_AUDIO_SCALE = 1.6  # the seed's default; at it the mouth moves as much as MAX_GAP says

# Face proportions, as fractions of a Haar face box (its top is near the brows, its bottom near the lower lip).
EYE_Y, EYE_X_LEFT, EYE_X_RIGHT, EYE_SIZE = 0.36, 0.28, 0.72, 0.24
MOUTH_Y, MOUTH_HALF_WIDTH, CHIN_Y = 0.85, 0.2, 1.17
LIP_SEARCH = 0.07  # how far (in face heights) the dark lip line may lie from the estimate

# Motion amplitudes, relative to the face box.
MAX_GAP = 0.07  # lip gap at full loudness, in face heights, at the default audio_scale
UPPER_LIP_SHARE = 0.2  # the upper lip takes this share of the gap, the jaw and lower lip the rest
SPREAD = 0.12  # lip corners move out (bright sounds: ee, s) or in (rounded: oo) by this share of the half-width
HEAD_SHIFT, HEAD_ROLL_DEG, NOD = 0.015, 0.9, 0.012
BREATH, BREATH_PERIOD_S = 0.008, 4.2
LOOK_AHEAD_S = 0.08  # lips move slightly before the sound
LEVEL_RANGE_DB = 30.0  # loudness range mapped to closed .. fully open
SILENCE_DBFS = -70.0  # frames quieter than this keep the mouth closed, however quiet the whole recording is
BLINK_S, BLINK_EVERY_S = 0.15, (2.0, 6.0)
LID_SAG = 0.4  # how far below the lid line the closed lids' middle sags, in half-openings


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class FaceLayout:
    face: Box
    eyes: tuple[tuple[float, float, float], ...]  # (centre x, centre y, size) per eye
    mouth_x: float
    mouth_y: float  # the lip line, where the lips part
    mouth_half_width: float
    chin_y: float
    face_found: bool
    eyes_found: bool
    lip_line_found: bool


def locate_face(image: np.ndarray) -> FaceLayout:
    """The largest face, its eyes and its mouth; a centred estimate when no face is found."""
    h, w = image.shape[:2]
    # A face confirmed by an eye; else the cascade's largest candidate (a face with its eyes hidden), which beats
    # a guess at the centre.
    faces = detect_faces(image) or face_candidates(image)[:1]
    face = faces[0] if faces else _centred_face(w, h)
    eye_boxes = detect_eyes(image, face) if faces else []
    if len(eye_boxes) == 2:
        eyes = tuple((b.x + b.w / 2.0, b.y + b.h / 2.0, float(b.w)) for b in eye_boxes)
    else:
        size = EYE_SIZE * face.w
        eyes = tuple((face.x + fx * face.w, face.y + EYE_Y * face.h, size) for fx in (EYE_X_LEFT, EYE_X_RIGHT))
    mouth_x = (eyes[0][0] + eyes[1][0]) / 2.0
    half_width = MOUTH_HALF_WIDTH * face.w
    estimate = face.y + MOUTH_Y * face.h
    lip_line = _lip_line(image, mouth_x, estimate, half_width, face.h) if faces else None
    return FaceLayout(face, eyes, mouth_x, lip_line if lip_line is not None else estimate, half_width,
                      face.y + CHIN_Y * face.h, bool(faces), len(eye_boxes) == 2, lip_line is not None)


def _centred_face(width: int, height: int) -> Box:
    side = int(0.4 * min(width, height))
    return Box((width - side) // 2, int(0.38 * height - side / 2), side, side)


def _lip_line(image: np.ndarray, mouth_x: float, estimate: float, half_width: float,
              face_h: int) -> float | None:
    """Where the lips part, searched near the estimate: below the upper teeth if they show (the teeth stay with
    the skull while the jaw drops), else the darkest row, if it stands out from the skin around it."""
    y0 = max(0, int(estimate - LIP_SEARCH * face_h))
    y1 = min(image.shape[0], int(estimate + LIP_SEARCH * face_h) + 1)
    x0, x1 = max(0, int(mouth_x - half_width / 2)), int(mouth_x + half_width / 2) + 1
    hsv = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2HSV).astype(np.float32)
    if hsv.shape[0] < 3 or hsv.shape[1] < 3:  # the mouth is off the image
        return None
    saturation, value = hsv[..., 1], hsv[..., 2]
    # Teeth: clearly less saturated than the skin and lips around them, and not darker.
    teeth = (saturation < 0.7 * np.median(saturation)) & (value > 0.9 * np.median(value))
    teeth_rows = np.flatnonzero(teeth.mean(axis=1) > 0.4)
    if teeth_rows.size >= 2:
        return float(y0 + teeth_rows[-1] + 1)
    rows = np.convolve(value.mean(axis=1), np.ones(3) / 3.0, mode="same")
    darkest = int(np.argmin(rows[1:-1])) + 1
    if np.median(rows) - rows[darkest] < 12.0:  # no clear lip line: keep the geometric estimate
        return None
    return float(y0 + darkest)


@dataclass(frozen=True)
class Field:
    """A displacement field for one unit of a motion, over a region of the image."""

    y0: int
    x0: int
    dx: np.ndarray | None
    dy: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dx if self.dx is not None else self.dy).shape


def _region(image_shape: tuple[int, ...], x0: float, x1: float, y0: float, y1: float):
    """Integer region clipped to the image, and its pixel coordinates."""
    h, w = image_shape[:2]
    xa, xb = max(0, int(x0)), min(w, int(np.ceil(x1)))
    ya, yb = max(0, int(y0)), min(h, int(np.ceil(y1)))
    ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    return ya, xa, xs, ys


def _lens(u: np.ndarray, half_width: float) -> np.ndarray:
    """The shape of parted lips across the mouth: full at the centre, closed at the corners."""
    return np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0) ** 0.8


def jaw_field(shape: tuple[int, ...], f: FaceLayout) -> Field:
    """One pixel of lip gap at the mouth's centre: the lower lip and chin drop, the upper lip rises a little."""
    fh, fw = f.face.h, f.face.w
    y0, x0, xs, ys = _region(shape, f.mouth_x - 0.6 * fw, f.mouth_x + 0.6 * fw,
                             f.mouth_y - 0.2 * fh, f.chin_y + 0.35 * fh)
    u, v = xs - f.mouth_x, ys - f.mouth_y
    lens = _lens(u, f.mouth_half_width)
    chin_half = 0.32 * fw
    chin_profile = 1.0 - _smoothstep(0.6 * chin_half, 1.3 * chin_half, np.abs(u))
    # Near the lips only the lens between the corners opens; lower down the whole jaw moves as one piece.
    toward_chin = _smoothstep(0.0, 0.45 * (f.chin_y - f.mouth_y), v)
    lower = ((1.0 - toward_chin) * lens + toward_chin * chin_profile) \
        * (1.0 - _smoothstep(f.chin_y - f.mouth_y, f.chin_y - f.mouth_y + 0.3 * fh, v))
    upper = lens * (1.0 - _smoothstep(0.0, 0.12 * fh, -v))
    below = _smoothstep(-0.75, 0.75, v)
    dy = -(below * (1.0 - UPPER_LIP_SHARE) * lower) + (1.0 - below) * UPPER_LIP_SHARE * upper
    return Field(y0, x0, None, dy.astype(np.float32))


def spread_field(shape: tuple[int, ...], f: FaceLayout) -> Field:
    """The lip corners move outwards by one pixel (negative amounts round the lips)."""
    a, fh = f.mouth_half_width, f.face.h
    y0, x0, xs, ys = _region(shape, f.mouth_x - 2 * a, f.mouth_x + 2 * a, f.mouth_y - 0.2 * fh,
                             f.mouth_y + 0.2 * fh)
    u, v = xs - f.mouth_x, ys - f.mouth_y
    weight = np.exp(-((v / (0.07 * fh)) ** 2)) * (1.0 - _smoothstep(a, 1.8 * a, np.abs(u)))
    return Field(y0, x0, (-(u / a) * weight).astype(np.float32), None)


def blink_field(shape: tuple[int, ...], f: FaceLayout) -> Field:
    """Both eyes fully closed: the skin above and below each eye slides over it until the lids meet."""
    xs_all = [e[0] for e in f.eyes]
    size = max(e[2] for e in f.eyes)
    y0, x0, xs, ys = _region(shape, min(xs_all) - size, max(xs_all) + size,
                             min(e[1] for e in f.eyes) - 2 * size, max(e[1] for e in f.eyes) + 1.5 * size)
    dy = np.zeros_like(xs)
    for ex, ey, eye_size in f.eyes:
        opening, half_width, meet = _eye_geometry(ey, eye_size)
        from_above, from_below = 1.85 * opening, 1.15 * opening  # how far the lid skin is pulled over the eye
        across = _lid_profile(xs - ex, half_width)
        v = ys - (meet + LID_SAG * opening * across)  # the closed lids meet on a curve, lowest in the middle
        above = -from_above * np.clip(1.0 + v / (from_above / 0.6), 0.0, 1.0)
        below = from_below * np.clip(1.0 - v / (from_below / 0.6), 0.0, 1.0)
        side = _smoothstep(-0.5, 0.5, v)
        dy += ((1.0 - side) * above + side * below) * across
    return Field(y0, x0, None, dy.astype(np.float32))


def _eye_geometry(eye_y: float, eye_size: float) -> tuple[float, float, float]:
    """Half the eye's opening, half its width, and the row where the lids meet (the upper lid travels most)."""
    opening = 0.17 * eye_size
    return opening, 0.5 * eye_size, eye_y + 0.25 * opening


def _lid_profile(u: np.ndarray, half_width: float) -> np.ndarray:
    """How far the lids travel across the eye: all the way in the middle, not at all at the corners."""
    return np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0) ** 0.35


@dataclass(frozen=True)
class BodyMasks:
    """Feathered weights over the moving region (y0:y1, x0:x1): how much the head motion and breathing move it."""

    y0: int
    y1: int
    x0: int
    x1: int
    head: np.ndarray
    head_dy: np.ndarray  # head * (y - pivot y): the roll's x component
    head_dx: np.ndarray  # head * (x - pivot x): the roll's y component
    breath: np.ndarray
    pivot: tuple[float, float]


def body_masks(shape: tuple[int, ...], f: FaceLayout) -> BodyMasks:
    """Head, neck and shoulders from the face's geometry, feathered so the background never moves."""
    h, w = shape[:2]
    fw, fh = f.face.w, f.face.h
    cx = f.face.x + fw / 2.0
    head, body = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    cv2.ellipse(head, (round(cx), round(f.face.y + 0.42 * fh)), (round(0.85 * fw), round(0.92 * fh)),
                0, 0, 360, 1.0, -1)
    cv2.rectangle(head, (round(cx - 0.33 * fw), round(f.chin_y - 0.2 * fh)),
                  (round(cx + 0.33 * fw), round(f.chin_y + 0.5 * fh)), 1.0, -1)
    shoulders_top = f.chin_y + 0.35 * fh
    trapezoid = np.array([[cx - 0.9 * fw, shoulders_top], [cx + 0.9 * fw, shoulders_top],
                          [cx + 2.4 * fw, shoulders_top + 1.3 * fh], [cx + 2.4 * fw, h + fh],
                          [cx - 2.4 * fw, h + fh], [cx - 2.4 * fw, shoulders_top + 1.3 * fh]])
    cv2.fillPoly(body, [np.round(trapezoid).astype(np.int32)], 1.0)
    sigma = 0.12 * fw
    head = cv2.GaussianBlur(np.maximum(head, 0.25 * body), (0, 0), sigma)
    breath = cv2.GaussianBlur(np.maximum(body, 0.6 * head), (0, 0), sigma)
    # Gaussian tails never reach zero; cut them so that everything outside the region is exactly still.
    head[head < 2e-3] = 0.0
    breath[breath < 2e-3] = 0.0
    ys, xs = np.nonzero((head > 0) | (breath > 0))
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pivot = (cx, f.chin_y + 0.3 * fh)  # the head turns about the base of the neck
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    head = np.ascontiguousarray(head[y0:y1, x0:x1])
    return BodyMasks(y0, y1, x0, x1, head, head * (grid_y - pivot[1]), head * (grid_x - pivot[0]),
                     np.ascontiguousarray(breath[y0:y1, x0:x1]), pivot)


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


def mouth_opening(features: FrameFeatures) -> np.ndarray:
    """0..1 per frame: loudness over the last LEVEL_RANGE_DB below the loud frames, led by LOOK_AHEAD_S."""
    db = 20.0 * np.log10(features.rms.astype(np.float64) + 1e-9)
    # Relative to the voice's loud frames, but never so low that near-silence would open the mouth.
    loud = max(float(np.percentile(db, 95)), SILENCE_DBFS + LEVEL_RANGE_DB)
    level = np.clip((db - (loud - LEVEL_RANGE_DB)) / LEVEL_RANGE_DB, 0.0, 1.0) ** 1.2
    lead = round(LOOK_AHEAD_S * features.fps)
    ahead = np.concatenate([level[lead:], np.zeros(min(lead, len(level)))])
    return _follow(ahead, features.fps, attack_s=0.03, release_s=0.06)


def lip_shape(features: FrameFeatures, opening: np.ndarray) -> np.ndarray:
    """-1 (rounded) .. 1 (spread) per frame, from the spectral centroid relative to the voice's own median."""
    voiced = opening > 0.2
    if not voiced.any():
        return np.zeros_like(opening)
    centroid = np.maximum(features.centroid_hz.astype(np.float64), 1.0)
    brightness = np.clip(np.log2(centroid / np.median(centroid[voiced])), -1.0, 1.0)
    lead = round(LOOK_AHEAD_S * features.fps)
    ahead = np.concatenate([brightness[lead:], np.zeros(min(lead, len(brightness)))])
    return _follow(ahead * np.minimum(1.0, 4.0 * opening), features.fps, 0.05, 0.08)


def blinks(frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Blinks of BLINK_S every 2-6 s: the lids close in 40% of the time, rest closed, and reopen."""
    times = (np.arange(frames) + 0.5) / fps
    out = np.zeros(frames)
    start = rng.uniform(0.8, 3.0)
    while start < times[-1] + BLINK_S:
        phase = (times - start) / BLINK_S
        closing = np.clip(phase / 0.4, 0.0, 1.0)
        opening = np.clip((1.0 - phase) / 0.6, 0.0, 1.0)
        out = np.maximum(out, np.minimum(1.0, 1.5 * np.minimum(closing, opening)))
        start += rng.uniform(*BLINK_EVERY_S)
    return out


def _wander(frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Slow, smooth, zero-mean motion with unit standard deviation: a few sines of 0.07-0.4 Hz."""
    t = np.arange(frames) / fps
    freqs, phases = rng.uniform(0.07, 0.4, 3), rng.uniform(0, 2 * np.pi, 3)
    weights = np.array([1.0, 0.6, 0.35])
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) \
        / np.sqrt(0.5 * np.sum(weights ** 2))


def motion_tracks(speech: SpeechTrack, f: FaceLayout, audio_scale: float, seed: int = SEED) -> MotionTracks:
    rng = np.random.default_rng(seed)
    fps, frames = speech.fps, speech.frames
    opening = mouth_opening(speech.features)
    mouth_gain = audio_scale / DEFAULT_AUDIO_SCALE
    gap = mouth_gain * MAX_GAP * f.face.h * opening
    spread = mouth_gain * SPREAD * f.mouth_half_width * lip_shape(speech.features, opening)
    emphasis = _follow(opening, fps, 0.25, 0.5)  # the head dips a little with stressed syllables
    t = np.arange(frames) / fps
    return MotionTracks(
        gap=gap.astype(np.float32),
        spread=spread.astype(np.float32),
        blink=blinks(frames, fps, rng).astype(np.float32),
        shift_x=(HEAD_SHIFT * f.face.w * _wander(frames, fps, rng)).astype(np.float32),
        shift_y=(0.6 * HEAD_SHIFT * f.face.h * _wander(frames, fps, rng) + NOD * f.face.h * emphasis)
        .astype(np.float32),
        roll=(np.radians(HEAD_ROLL_DEG) * _wander(frames, fps, rng)).astype(np.float32),
        breath=(BREATH * f.face.h * 0.5 * (1.0 - np.cos(2 * np.pi * t / BREATH_PERIOD_S))).astype(np.float32),
    )


@dataclass(frozen=True)
class AnimatorState:
    image: np.ndarray
    layout: FaceLayout
    jaw: Field
    spread: Field
    blink: Field
    masks: BodyMasks
    tracks: MotionTracks
    cavity_rgb: np.ndarray  # the colour deep inside the open mouth
    lash_rgb: np.ndarray  # the darkest colour around the eyes
    grid_x: np.ndarray  # pixel coordinates over the moving region
    grid_y: np.ndarray


class AnimatorBackend:
    name = "lite"
    honoured_params = frozenset({"fps", "frame_window_size", "motion_frame", "normalize_loudness", "audio_scale"})

    def fit_portrait(self, image: np.ndarray, params: Any) -> tuple[np.ndarray, str]:
        """Shrunk (never enlarged) to at most SPINBOT_TALK_MAX_PIXELS, multiples of 16, centre-cropped: any size
        suits a 2-D animator, so the portrait keeps as much of its own as the budget allows."""
        budget = get_settings().talk_max_pixels
        width, height = fit_size(image.shape[1], image.shape[0], budget)
        return resize_to(image, width, height), f"at most {budget} pixels (SPINBOT_TALK_MAX_PIXELS), never enlarged"

    def prepare(self, image: np.ndarray, speech: SpeechTrack, params: Any) -> AnimatorState:
        layout = locate_face(image)
        if not layout.face_found:
            log.warning("no face detected in the portrait; animating a centred estimate")
        masks = body_masks(image.shape, layout)
        grid_y, grid_x = np.mgrid[masks.y0:masks.y1, masks.x0:masks.x1].astype(np.float32)
        return AnimatorState(
            image=np.ascontiguousarray(image),
            layout=layout,
            jaw=jaw_field(image.shape, layout),
            spread=spread_field(image.shape, layout),
            blink=blink_field(image.shape, layout),
            masks=masks,
            tracks=motion_tracks(speech, layout, params.audio_scale),
            cavity_rgb=_cavity_colour(image, layout),
            lash_rgb=_lash_colour(image, layout),
            grid_x=grid_x,
            grid_y=grid_y,
        )

    def render_window(self, state: AnimatorState, window: Window) -> Iterator[np.ndarray]:
        for index in window.new_frames:
            yield render_frame(state, index)

    def describe(self, state: AnimatorState) -> dict[str, Any]:
        f = state.layout
        warnings = [] if f.face_found else ["no face detected in the portrait: animated a centred estimate"]
        return {
            "face_found": f.face_found,
            "face_box": [f.face.x, f.face.y, f.face.w, f.face.h],
            "eyes": "detected" if f.eyes_found else "estimated",
            "lip_line": "found" if f.lip_line_found else "estimated",
            "mouth": [round(f.mouth_x, 1), round(f.mouth_y, 1)],
            "blinks": int(np.count_nonzero(np.diff((state.tracks.blink > 0).astype(np.int8), prepend=0) == 1)),
            "warnings": warnings,
        }


def _cavity_colour(image: np.ndarray, f: FaceLayout) -> np.ndarray:
    """A deep, dark red taken from the lips' own colour, so it suits the portrait's lighting."""
    lips = _pixels_around(image, f.mouth_x, f.mouth_y, max(2.0, f.mouth_half_width / 2), 3.0)
    return (0.18 * np.median(lips, axis=0) + np.array([12.0, 2.0, 2.0])).astype(np.float32)


def _lash_colour(image: np.ndarray, f: FaceLayout) -> np.ndarray:
    """The darkest colour around the first eye: lashes and pupil."""
    ex, ey, size = f.eyes[0]
    return np.percentile(_pixels_around(image, ex, ey, size / 2, size / 2), 5, axis=0).astype(np.float32)


def _pixels_around(image: np.ndarray, x: float, y: float, half_w: float, half_h: float) -> np.ndarray:
    """The pixels (n, 3) of a box around (x, y), kept inside the image and never empty."""
    h, w = image.shape[:2]
    x0, y0 = min(max(0, int(x - half_w)), w - 1), min(max(0, int(y - half_h)), h - 1)
    x1, y1 = max(x0 + 1, min(w, int(x + half_w) + 1)), max(y0 + 1, min(h, int(y + half_h) + 1))
    return image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)


def render_frame(state: AnimatorState, index: int) -> np.ndarray:
    tr, m, f = state.tracks, state.masks, state.layout
    map_x, map_y = _head_maps(state, index)
    # The face's own motions ride on the head: place their fields where the head has moved the mouth and eyes.
    mouth_shift = _head_shift_at(state, index, f.mouth_x, f.mouth_y)
    eyes_shift = _head_shift_at(state, index, *_eyes_centre(f))
    _add_field(map_x, map_y, m, state.jaw, tr.gap[index], mouth_shift)
    _add_field(map_x, map_y, m, state.spread, tr.spread[index], mouth_shift)
    _add_field(map_x, map_y, m, state.blink, tr.blink[index], eyes_shift)
    frame = state.image.copy()
    frame[m.y0:m.y1, m.x0:m.x1] = cv2.remap(state.image, map_x, map_y, cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
    _draw_cavity(frame, state, tr.gap[index], tr.spread[index], mouth_shift)
    _draw_lash_lines(frame, state, tr.blink[index], eyes_shift)
    return frame


def _eyes_centre(f: FaceLayout) -> tuple[float, float]:
    return (f.eyes[0][0] + f.eyes[1][0]) / 2.0, (f.eyes[0][1] + f.eyes[1][1]) / 2.0


def _head_maps(state: AnimatorState, index: int) -> tuple[np.ndarray, np.ndarray]:
    tr, m = state.tracks, state.masks
    map_x = cv2.scaleAdd(m.head, -float(tr.shift_x[index]), state.grid_x)
    cv2.scaleAdd(m.head_dy, float(tr.roll[index]), map_x, dst=map_x)
    map_y = cv2.scaleAdd(m.head, -float(tr.shift_y[index]), state.grid_y)
    cv2.scaleAdd(m.head_dx, -float(tr.roll[index]), map_y, dst=map_y)
    cv2.scaleAdd(m.breath, float(tr.breath[index]), map_y, dst=map_y)
    return map_x, map_y


def _head_shift_at(state: AnimatorState, index: int, x: float, y: float) -> tuple[int, int]:
    """How far (rows, cols), to the pixel, head motion and breathing move the content at (x, y)."""
    tr, m = state.tracks, state.masks
    row = min(max(int(y) - m.y0, 0), m.y1 - m.y0 - 1)
    col = min(max(int(x) - m.x0, 0), m.x1 - m.x0 - 1)
    head, breath = float(m.head[row, col]), float(m.breath[row, col])
    roll = float(tr.roll[index])
    move_x = head * (float(tr.shift_x[index]) - roll * (y - m.pivot[1]))
    move_y = head * (float(tr.shift_y[index]) + roll * (x - m.pivot[0])) - breath * float(tr.breath[index])
    return round(move_y), round(move_x)


def _add_field(map_x: np.ndarray, map_y: np.ndarray, m: BodyMasks, field: Field, amount: float,
               shift: tuple[int, int]) -> None:
    """maps += amount * field, with the field moved by `shift` (rows, cols) and clipped to the maps."""
    if amount == 0.0:
        return
    rows, cols = field.shape
    top, left = field.y0 + shift[0] - m.y0, field.x0 + shift[1] - m.x0
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(map_x.shape[0], top + rows), min(map_x.shape[1], left + cols)
    if r1 <= r0 or c1 <= c0:
        return
    src = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
    if field.dx is not None:
        map_x[r0:r1, c0:c1] += amount * field.dx[src]
    if field.dy is not None:
        map_y[r0:r1, c0:c1] += amount * field.dy[src]


def _draw_cavity(frame: np.ndarray, state: AnimatorState, gap: float, spread: float,
                 shift: tuple[int, int]) -> None:
    """The dark inside of the mouth, in the lens between the parted lips, with soft edges."""
    if gap < 0.5:
        return
    f = state.layout
    half_width = f.mouth_half_width + spread
    cx, cy = f.mouth_x + shift[1], f.mouth_y + shift[0]
    top_gap, bottom_gap = UPPER_LIP_SHARE * gap, (1.0 - UPPER_LIP_SHARE) * gap
    y0, x0, xs, ys = _region(frame.shape, cx - half_width, cx + half_width, cy - top_gap - 1, cy + bottom_gap + 2)
    lens = _lens(xs - cx, half_width)
    v = ys - cy
    inside = np.minimum(v + top_gap * lens, bottom_gap * lens - v)  # pixels from the nearer lip
    alpha = np.clip(inside / 1.2, 0.0, 1.0) * (lens > 0)
    # Darkest in the middle of the opening, a little lighter near the lips.
    depth = np.clip(inside / max(gap * 0.5, 1.0), 0.0, 1.0)[..., None]
    colour = state.cavity_rgb * (1.6 - 0.6 * depth)
    patch = frame[y0:y0 + xs.shape[0], x0:x0 + xs.shape[1]].astype(np.float32)
    patch += alpha[..., None] * (colour - patch)
    frame[y0:y0 + xs.shape[0], x0:x0 + xs.shape[1]] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)


def _draw_lash_lines(frame: np.ndarray, state: AnimatorState, blink: float, shift: tuple[int, int]) -> None:
    """Where the lids meet, the lashes show as a soft dark curve, sagging a little in the middle."""
    strength = float(_smoothstep(0.5, 1.0, np.float32(blink)))
    if strength == 0.0:
        return
    for ex, ey, eye_size in state.layout.eyes:
        opening, half_width, meet = _eye_geometry(ey, eye_size)
        cx, cy = ex + shift[1], meet + shift[0]
        y0, x0, xs, ys = _region(frame.shape, cx - half_width, cx + half_width, cy - 2, cy + 0.4 * opening + 3)
        across = _lid_profile(xs - cx, half_width)
        curve = cy + LID_SAG * opening * across
        alpha = strength * 0.8 * across * np.exp(-(((ys - curve) / 0.8) ** 2))
        patch = frame[y0:y0 + xs.shape[0], x0:x0 + xs.shape[1]].astype(np.float32)
        patch += alpha[..., None] * (state.lash_rgb - patch)
        frame[y0:y0 + xs.shape[0], x0:x0 + xs.shape[1]] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
