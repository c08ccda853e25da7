"""One frame of the lite animator: the portrait remapped through the fields and masks at that frame's motion, with
the mouth's cavity drawn between the parted lips and the lashes where the lids meet."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spinbot.backends.talk.face_layout import PROPORTIONS, FaceLayout, FaceProportions
from spinbot.backends.talk.motion import MotionTracks
from spinbot.backends.talk.warp_fields import BodyMasks, Field, eye_geometry, lid_profile, lips_lens, region, smoothstep


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


def cavity_colour(image: np.ndarray, f: FaceLayout) -> np.ndarray:
    """A deep, dark red taken from the lips' own colour, so it suits the portrait's lighting."""
    lips = _pixels_around(image, f.mouth_x, f.mouth_y, max(2.0, f.mouth_half_width / 2), 3.0)
    return (0.18 * np.median(lips, axis=0) + np.array([12.0, 2.0, 2.0])).astype(np.float32)


def lash_colour(image: np.ndarray, f: FaceLayout) -> np.ndarray:
    """The darkest colour around the first eye: lashes and pupil."""
    ex, ey, size = f.eyes[0]
    return np.percentile(_pixels_around(image, ex, ey, size / 2, size / 2), 5, axis=0).astype(np.float32)


def _pixels_around(image: np.ndarray, x: float, y: float, half_w: float, half_h: float) -> np.ndarray:
    """The pixels (n, 3) of a box around (x, y), kept inside the image and never empty."""
    h, w = image.shape[:2]
    x0, y0 = min(max(0, int(x - half_w)), w - 1), min(max(0, int(y - half_h)), h - 1)
    x1, y1 = max(x0 + 1, min(w, int(x + half_w) + 1)), max(y0 + 1, min(h, int(y + half_h) + 1))
    return image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)


def render_frame(state: AnimatorState, index: int, p: FaceProportions = PROPORTIONS) -> np.ndarray:
    tr, m, f = state.tracks, state.masks, state.layout
    map_x, map_y = _head_maps(state, index)
    # The face's own motions ride on the head: place their fields where the head has moved the mouth and eyes.
    mouth_shift = _head_shift_at(state, index, f.mouth_x, f.mouth_y)
    eyes_shift = _head_shift_at(state, index, *_eyes_centre(f))
    _add_field(map_x, map_y, m, state.jaw, tr.gap[index], mouth_shift)
    _add_field(map_x, map_y, m, state.spread, tr.spread[index], mouth_shift)
    _add_field(map_x, map_y, m, state.blink, tr.blink[index], eyes_shift)
    frame = state.image.copy()
    frame[m.y0 : m.y1, m.x0 : m.x1] = cv2.remap(
        state.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    _draw_cavity(frame, state, tr.gap[index], tr.spread[index], mouth_shift, p)
    _draw_lash_lines(frame, state, tr.blink[index], eyes_shift, p)
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


def _add_field(
    map_x: np.ndarray, map_y: np.ndarray, m: BodyMasks, field: Field, amount: float, shift: tuple[int, int]
) -> None:
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


def _draw_cavity(
    frame: np.ndarray, state: AnimatorState, gap: float, spread: float, shift: tuple[int, int], p: FaceProportions
) -> None:
    """The dark inside of the mouth, in the lens between the parted lips, with soft edges."""
    if gap < 0.5:
        return
    f = state.layout
    half_width = f.mouth_half_width + spread
    cx, cy = f.mouth_x + shift[1], f.mouth_y + shift[0]
    top_gap, bottom_gap = p.upper_lip_share * gap, (1.0 - p.upper_lip_share) * gap
    y0, x0, xs, ys = region(frame.shape, cx - half_width, cx + half_width, cy - top_gap - 1, cy + bottom_gap + 2)
    lens = lips_lens(xs - cx, half_width, p)
    v = ys - cy
    inside = np.minimum(v + top_gap * lens, bottom_gap * lens - v)  # pixels from the nearer lip
    alpha = np.clip(inside / 1.2, 0.0, 1.0) * (lens > 0)
    # Darkest in the middle of the opening, a little lighter near the lips.
    depth = np.clip(inside / max(gap * 0.5, 1.0), 0.0, 1.0)[..., None]
    colour = state.cavity_rgb * (1.6 - 0.6 * depth)
    patch = frame[y0 : y0 + xs.shape[0], x0 : x0 + xs.shape[1]].astype(np.float32)
    patch += alpha[..., None] * (colour - patch)
    frame[y0 : y0 + xs.shape[0], x0 : x0 + xs.shape[1]] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)


def _draw_lash_lines(
    frame: np.ndarray, state: AnimatorState, blink: float, shift: tuple[int, int], p: FaceProportions
) -> None:
    """Where the lids meet, the lashes show as a soft dark curve, sagging a little in the middle."""
    strength = float(smoothstep(0.5, 1.0, np.array(blink, dtype=np.float32)))
    if strength == 0.0:
        return
    for ex, ey, eye_size in state.layout.eyes:
        opening, half_width, meet = eye_geometry(ey, eye_size, p)
        cx, cy = ex + shift[1], meet + shift[0]
        y0, x0, xs, ys = region(frame.shape, cx - half_width, cx + half_width, cy - 2, cy + p.lid_sag * opening + 3)
        across = lid_profile(xs - cx, half_width, p)
        curve = cy + p.lid_sag * opening * across
        alpha = strength * 0.8 * across * np.exp(-(((ys - curve) / 0.8) ** 2))
        patch = frame[y0 : y0 + xs.shape[0], x0 : x0 + xs.shape[1]].astype(np.float32)
        patch += alpha[..., None] * (state.lash_rgb - patch)
        frame[y0 : y0 + xs.shape[0], x0 : x0 + xs.shape[1]] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
