"""The displacement fields of the face's motions and the masks of the head's, computed once per portrait.

Each field is the displacement of one unit of its motion (one pixel of lip gap, of corner spread; the eyes fully
closed), over the region it touches; a frame scales and adds them. Sign convention: a displacement field D is where
each output pixel samples the portrait (out(p) = img(p + D(p))), so content moves by -D.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spinbot.backends.talk.face_layout import PROPORTIONS, FaceLayout, FaceProportions


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Field:
    """A displacement field for one unit of a motion, over a region of the image."""

    y0: int
    x0: int
    dx: np.ndarray | None
    dy: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        values = self.dx if self.dx is not None else self.dy
        assert values is not None, "a field moves along x, y or both"
        rows, cols = values.shape
        return rows, cols


def region(image_shape: tuple[int, ...], x0: float, x1: float, y0: float, y1: float):
    """Integer region clipped to the image, and its pixel coordinates."""
    h, w = image_shape[:2]
    xa, xb = max(0, int(x0)), min(w, int(np.ceil(x1)))
    ya, yb = max(0, int(y0)), min(h, int(np.ceil(y1)))
    ys, xs = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    return ya, xa, xs, ys


def lips_lens(u: np.ndarray, half_width: float, p: FaceProportions = PROPORTIONS) -> np.ndarray:
    """The shape of parted lips across the mouth: full at the centre, closed at the corners."""
    return np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0) ** p.lips_roundness


def jaw_field(shape: tuple[int, ...], f: FaceLayout, p: FaceProportions = PROPORTIONS) -> Field:
    """One pixel of lip gap at the mouth's centre: the lower lip and chin drop, the upper lip rises a little."""
    fh, fw = f.face.h, f.face.w
    y0, x0, xs, ys = region(
        shape,
        f.mouth_x - p.jaw_reach_x * fw,
        f.mouth_x + p.jaw_reach_x * fw,
        f.mouth_y - p.jaw_above * fh,
        f.chin_y + p.jaw_below_chin * fh,
    )
    u, v = xs - f.mouth_x, ys - f.mouth_y
    lens = lips_lens(u, f.mouth_half_width, p)
    chin_half = p.chin_half_width * fw
    chin_profile = 1.0 - smoothstep(p.chin_edge[0] * chin_half, p.chin_edge[1] * chin_half, np.abs(u))
    # Near the lips only the lens between the corners opens; lower down the whole jaw moves as one piece.
    toward_chin = smoothstep(0.0, p.lips_to_jaw * (f.chin_y - f.mouth_y), v)
    lower = ((1.0 - toward_chin) * lens + toward_chin * chin_profile) * (
        1.0 - smoothstep(f.chin_y - f.mouth_y, f.chin_y - f.mouth_y + p.jaw_fade * fh, v)
    )
    upper = lens * (1.0 - smoothstep(0.0, p.upper_lip_reach * fh, -v))
    below = smoothstep(-p.lip_seam_px, p.lip_seam_px, v)
    dy = -(below * (1.0 - p.upper_lip_share) * lower) + (1.0 - below) * p.upper_lip_share * upper
    return Field(y0, x0, None, dy.astype(np.float32))


def spread_field(shape: tuple[int, ...], f: FaceLayout, p: FaceProportions = PROPORTIONS) -> Field:
    """The lip corners move outwards by one pixel (negative amounts round the lips)."""
    a, fh = f.mouth_half_width, f.face.h
    y0, x0, xs, ys = region(
        shape,
        f.mouth_x - p.spread_reach * a,
        f.mouth_x + p.spread_reach * a,
        f.mouth_y - p.spread_height * fh,
        f.mouth_y + p.spread_height * fh,
    )
    u, v = xs - f.mouth_x, ys - f.mouth_y
    weight = np.exp(-((v / (p.spread_thickness * fh)) ** 2)) * (1.0 - smoothstep(a, p.spread_fade * a, np.abs(u)))
    return Field(y0, x0, (-(u / a) * weight).astype(np.float32), None)


def blink_field(shape: tuple[int, ...], f: FaceLayout, p: FaceProportions = PROPORTIONS) -> Field:
    """Both eyes fully closed: the skin above and below each eye slides over it until the lids meet."""
    xs_all = [e[0] for e in f.eyes]
    size = max(e[2] for e in f.eyes)
    beside, above_eyes, below_eyes = p.lid_margin
    y0, x0, xs, ys = region(
        shape,
        min(xs_all) - beside * size,
        max(xs_all) + beside * size,
        min(e[1] for e in f.eyes) - above_eyes * size,
        max(e[1] for e in f.eyes) + below_eyes * size,
    )
    dy = np.zeros_like(xs)
    for ex, ey, eye_size in f.eyes:
        opening, half_width, meet = eye_geometry(ey, eye_size, p)
        from_above, from_below = p.lid_pull[0] * opening, p.lid_pull[1] * opening
        across = lid_profile(xs - ex, half_width, p)
        v = ys - (meet + p.lid_sag * opening * across)  # the closed lids meet on a curve, lowest in the middle
        above = -from_above * np.clip(1.0 + v / (from_above / p.lid_stretch), 0.0, 1.0)
        below = from_below * np.clip(1.0 - v / (from_below / p.lid_stretch), 0.0, 1.0)
        side = smoothstep(-p.lid_seam_px, p.lid_seam_px, v)
        dy += ((1.0 - side) * above + side * below) * across
    return Field(y0, x0, None, dy.astype(np.float32))


def eye_geometry(eye_y: float, eye_size: float, p: FaceProportions = PROPORTIONS) -> tuple[float, float, float]:
    """Half the eye's opening, half its width, and the row where the lids meet (the upper lid travels most)."""
    opening = p.eye_opening * eye_size
    return opening, 0.5 * eye_size, eye_y + p.lids_meet * opening


def lid_profile(u: np.ndarray, half_width: float, p: FaceProportions = PROPORTIONS) -> np.ndarray:
    """How far the lids travel across the eye: all the way in the middle, not at all at the corners."""
    return np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0) ** p.lid_roundness


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


def body_masks(shape: tuple[int, ...], f: FaceLayout, p: FaceProportions = PROPORTIONS) -> BodyMasks:
    """Head, neck and shoulders from the face's geometry, feathered so the background never moves."""
    h, w = shape[:2]
    fw, fh = f.face.w, f.face.h
    cx = f.face.x + fw / 2.0
    head, body = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    cv2.ellipse(
        head,
        (round(cx), round(f.face.y + p.head_centre_y * fh)),
        (round(p.head_radii[0] * fw), round(p.head_radii[1] * fh)),
        0,
        0,
        360,
        1.0,
        -1,
    )
    cv2.rectangle(
        head,
        (round(cx - p.neck_half_width * fw), round(f.chin_y - p.neck_span[0] * fh)),
        (round(cx + p.neck_half_width * fw), round(f.chin_y + p.neck_span[1] * fh)),
        1.0,
        -1,
    )
    shoulders_top = f.chin_y + p.shoulders_top * fh
    top, widest = p.shoulders_half_width[0] * fw, p.shoulders_half_width[1] * fw
    widest_y = shoulders_top + p.shoulders_slope * fh
    trapezoid = np.array(
        [
            [cx - top, shoulders_top],
            [cx + top, shoulders_top],
            [cx + widest, widest_y],
            [cx + widest, h + fh],
            [cx - widest, h + fh],
            [cx - widest, widest_y],
        ]
    )
    cv2.fillPoly(body, [np.round(trapezoid).astype(np.int32)], 1.0)
    sigma = p.mask_feather * fw
    head = cv2.GaussianBlur(np.maximum(head, p.head_carries_shoulders * body), (0, 0), sigma)
    breath = cv2.GaussianBlur(np.maximum(body, p.breath_lifts_head * head), (0, 0), sigma)
    # Gaussian tails never reach zero; cut them so that everything outside the region is exactly still.
    head[head < 2e-3] = 0.0
    breath[breath < 2e-3] = 0.0
    ys, xs = np.nonzero((head > 0) | (breath > 0))
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pivot = (cx, f.chin_y + p.pivot_below_chin * fh)
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    head = np.ascontiguousarray(head[y0:y1, x0:x1])
    return BodyMasks(
        y0,
        y1,
        x0,
        x1,
        head,
        head * (grid_y - pivot[1]),
        head * (grid_x - pivot[0]),
        np.ascontiguousarray(breath[y0:y1, x0:x1]),
        pivot,
    )
