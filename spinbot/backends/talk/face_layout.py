"""Where the parts of the portrait's face are: the proportions of a face, and the layout found in one portrait.

`FaceProportions` holds every face proportion the lite animator uses, each with its reason; `locate_face` places
the eyes and mouth in a portrait (OpenCV's Haar cascades, then the proportions where a cascade finds nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from spinbot.media.faces import Box, detect_eyes, detect_faces, face_candidates


@dataclass(frozen=True)
class FaceProportions:
    """Face proportions as fractions of a Haar face box (its top is near the brows, its bottom near the lower lip),
    unless a field's comment names another unit."""

    # Landmarks, where the cascades find none.
    eye_y: float = 0.36  # eye centres: a little above the box's middle, which is near the nose's bridge
    eye_x: tuple[float, float] = (0.28, 0.72)  # left and right eye centres: eyes are about an eye width apart
    eye_size: float = 0.24  # an eye's width: about a quarter of the face's
    mouth_y: float = 0.85  # the lip line: the box ends near the lower lip
    mouth_half_width: float = 0.2  # the mouth corners lie below the pupils' inner edges
    chin_y: float = 1.17  # the chin: the box stops short of it
    lip_search: float = 0.07  # face heights: how far the dark lip line may lie from mouth_y
    # No face found: a square guess, framed as portraits frame a face.
    guess_side: float = 0.4  # of the image's shorter side
    guess_centre_y: float = 0.38  # of the image's height: portraits put the face above the middle
    # Jaw and lips (jaw_field).
    upper_lip_share: float = 0.2  # of the lip gap: the upper lip rises this much, the jaw and lower lip drop the rest
    jaw_reach_x: float = 0.6  # face widths either side of the mouth that the jaw's motion covers
    jaw_above: float = 0.2  # face heights above the lip line that the field covers (the upper lip)
    jaw_below_chin: float = 0.35  # face heights below the chin that the field covers (the fade below)
    chin_half_width: float = 0.32  # face widths: the chin moves as one piece across this half-width ...
    chin_edge: tuple[float, float] = (0.6, 1.3)  # ... fading out between these multiples of it (the jaw's sides)
    lips_to_jaw: float = 0.45  # share of the mouth-chin distance over which the lips' lens gives way to the jaw
    jaw_fade: float = 0.3  # face heights below the chin over which the jaw's motion fades out (the neck stays)
    upper_lip_reach: float = 0.12  # face heights above the lip line that the upper lip's rise reaches
    lip_seam_px: float = 0.75  # pixels either side of the lip line over which the lips' opposite motions blend
    lips_roundness: float = 0.8  # parted lips' profile (1 - u^2)^p: below 1, fuller toward the corners
    # Lip corners (spread_field), in mouth half-widths across and face heights up and down.
    spread_reach: float = 2.0  # the field covers this many half-widths either side of the mouth's centre
    spread_height: float = 0.2  # face heights above and below the lip line that the field covers
    spread_thickness: float = 0.07  # face heights: the corners' motion falls off away from the lip line
    spread_fade: float = 1.8  # half-widths: the motion fades from the corners (1) to here
    # Eyelids (blink_field), in eye widths and half-openings.
    eye_opening: float = 0.17  # half the eye's opening, in eye widths
    lids_meet: float = 0.25  # half-openings below the eye's centre where the lids meet: the upper lid travels most
    lid_sag: float = 0.4  # half-openings that the closed lids' middle sags below the corners
    lid_pull: tuple[float, float] = (1.85, 1.15)  # half-openings of skin pulled over the eye from above, below
    lid_stretch: float = 0.6  # the pulled skin moves 0.6 px less per px from the lids: below 1, the warp never folds
    lid_roundness: float = 0.35  # the lids' travel across the eye (1 - u^2)^p: nearly flat, closing to the corners
    lid_seam_px: float = 0.5  # pixels either side of where the lids meet over which their motions blend
    lid_margin: tuple[float, float, float] = (1.0, 2.0, 1.5)  # eye widths the field covers beside, above, below
    # Head, neck and shoulders (body_masks), in face widths across and face heights down.
    head_centre_y: float = 0.42  # the head ellipse's centre: a little above the box's middle (the skull's top)
    head_radii: tuple[float, float] = (0.85, 0.92)  # the head ellipse's half-axes, hair and ears included
    neck_half_width: float = 0.33  # face widths: the neck is about two thirds as wide as the face
    neck_span: tuple[float, float] = (0.2, 0.5)  # face heights above and below the chin: jaw underside to collar
    shoulders_top: float = 0.35  # face heights below the chin, where the shoulders start
    shoulders_half_width: tuple[float, float] = (0.9, 2.4)  # face widths, at the shoulders' top and widest
    shoulders_slope: float = 1.3  # face heights from the shoulders' top down to their widest
    head_carries_shoulders: float = 0.25  # share of the head's motion the shoulders take (it turns on the neck)
    breath_lifts_head: float = 0.6  # share of the breathing lift the head takes (the shoulders rise most)
    pivot_below_chin: float = 0.3  # face heights: the head turns about the base of the neck
    mask_feather: float = 0.12  # face widths: the masks' Gaussian feather, so no edge shows in the background


PROPORTIONS = FaceProportions()


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
    faces_found: int = 0  # faces confirmed by an eye: past one, the others stay still


def locate_face(image: np.ndarray, p: FaceProportions = PROPORTIONS) -> FaceLayout:
    """The largest face, its eyes and its mouth; a centred estimate when no face is found."""
    h, w = image.shape[:2]
    # A face confirmed by an eye; else the cascade's largest candidate (a face with its eyes hidden), which beats
    # a guess at the centre.
    confirmed = detect_faces(image)
    faces = confirmed or face_candidates(image)[:1]
    face = faces[0] if faces else _centred_face(w, h, p)
    eye_boxes = detect_eyes(image, face) if faces else []
    if len(eye_boxes) == 2:
        eyes = tuple((b.x + b.w / 2.0, b.y + b.h / 2.0, float(b.w)) for b in eye_boxes)
    else:
        size = p.eye_size * face.w
        eyes = tuple((face.x + fx * face.w, face.y + p.eye_y * face.h, size) for fx in p.eye_x)
    mouth_x = (eyes[0][0] + eyes[1][0]) / 2.0
    half_width = p.mouth_half_width * face.w
    estimate = face.y + p.mouth_y * face.h
    lip_line = _lip_line(image, mouth_x, estimate, half_width, face.h, p.lip_search) if faces else None
    return FaceLayout(
        face,
        eyes,
        mouth_x,
        lip_line if lip_line is not None else estimate,
        half_width,
        face.y + p.chin_y * face.h,
        bool(faces),
        len(eye_boxes) == 2,
        lip_line is not None,
        len(confirmed),
    )


def _centred_face(width: int, height: int, p: FaceProportions) -> Box:
    side = int(p.guess_side * min(width, height))
    return Box((width - side) // 2, int(p.guess_centre_y * height - side / 2), side, side)


def _lip_line(
    image: np.ndarray, mouth_x: float, estimate: float, half_width: float, face_h: int, search: float
) -> float | None:
    """Where the lips part, searched near the estimate: below the upper teeth if they show (the teeth stay with
    the skull while the jaw drops), else the darkest row, if it stands out from the skin around it."""
    y0 = max(0, int(estimate - search * face_h))
    y1 = min(image.shape[0], int(estimate + search * face_h) + 1)
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
