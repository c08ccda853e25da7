"""Face and eye detection with the Haar cascades that ship inside the OpenCV wheel (no download).

The frontal-face cascade alone takes face-like texture for faces: in the demo portrait it finds the space shuttle
beside the astronaut as a second, larger face in about a third of the frames. So a candidate counts as a face only
when the eye cascade finds an eye in its upper half. (PyPI has no package that ships a DNN face detector's model
file for OpenCV, such as YuNet's .onnx, without a download at run time.) The eyes are looked for on the candidate's
region taken from the full-size image and brought to EYE_SEARCH_WIDTH pixels, so that eyes are above the eye
cascade's 20-pixel window even when the faces were searched on a shrunken copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

# Width the upper half of a face candidate is scaled to before the eye search: eyes come out at about 25-35 px.
EYE_SEARCH_WIDTH = 128
# Fewer neighbours than the face search: a real eye in a small or moving face must not be missed, and the box it
# is searched in is already a face candidate.
EYE_CONFIRM_NEIGHBOURS = 3


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def scaled(self, factor: float) -> Box:
        return Box(round(self.x * factor), round(self.y * factor), round(self.w * factor), round(self.h * factor))


_THREAD = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
    """This thread's own classifier: detectMultiScale keeps its working data in the object, so two jobs sharing one
    (two threads of one process) changed each other's detections, or failed OpenCV's getScaleData assertion (11 of
    405 detections differed and two threads raised, in tests/unit/test_faces.py's concurrency test before this)."""
    cascades = _THREAD.__dict__.setdefault("cascades", {})
    if name not in cascades:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)  # type: ignore[attr-defined]  # not in stubs
        if cascade.empty():
            raise RuntimeError(f"OpenCV cascade {name} is missing from the cv2 wheel")
        cascades[name] = cascade
    return cascades[name]


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def face_candidates(rgb: np.ndarray, min_fraction: float = 0.08) -> list[Box]:
    """What the frontal-face cascade finds, largest first, unconfirmed; min_fraction is the smallest face side
    relative to the image's shorter side."""
    gray = _gray(rgb)
    side = int(min(gray.shape) * min_fraction)
    found = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(max(side, 24), max(side, 24))
    )
    boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def has_an_eye(rgb: np.ndarray, face: Box) -> bool:
    """Whether the eye cascade finds an eye in the upper half of the face box."""
    top = rgb[max(0, face.y) : face.y + face.h // 2, max(0, face.x) : face.x + face.w]
    if top.shape[0] < 4 or top.shape[1] < 4:
        return False
    height = max(1, round(top.shape[0] * EYE_SEARCH_WIDTH / top.shape[1]))
    shrink = top.shape[1] > EYE_SEARCH_WIDTH
    top = cv2.resize(top, (EYE_SEARCH_WIDTH, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    side = EYE_SEARCH_WIDTH // 10
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        _gray(top), scaleFactor=1.1, minNeighbors=EYE_CONFIRM_NEIGHBOURS, minSize=(side, side)
    )
    return len(found) > 0


def detect_faces(rgb: np.ndarray, min_fraction: float = 0.08, max_side: int | None = None) -> list[Box]:
    """Frontal faces confirmed by an eye, largest first, in the image's coordinates. With max_side, the faces are
    searched on a copy whose longer side is at most max_side (cheaper; faces in a talking head are large)."""
    height, width = rgb.shape[:2]
    shrink = min(1.0, max_side / max(height, width)) if max_side else 1.0
    if shrink < 1.0:
        small = cv2.resize(rgb, (round(width * shrink), round(height * shrink)), interpolation=cv2.INTER_AREA)
        candidates = [box.scaled(1 / shrink) for box in face_candidates(small, min_fraction)]
    else:
        candidates = face_candidates(rgb, min_fraction)
    return [box for box in candidates if has_an_eye(rgb, box)]


def detect_eyes(rgb: np.ndarray, face: Box) -> list[Box]:
    """Eyes inside the upper half of a face box, in image coordinates, left to right."""
    top = rgb[face.y : face.y + face.h // 2, face.x : face.x + face.w]
    if top.size == 0:
        return []
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        _gray(top), scaleFactor=1.1, minNeighbors=5, minSize=(max(face.w // 10, 8), max(face.w // 10, 8))
    )
    eyes = [Box(face.x + int(x), face.y + int(y), int(w), int(h)) for x, y, w, h in found]
    eyes = sorted(eyes, key=lambda b: b.area, reverse=True)[:2]
    return sorted(eyes, key=lambda b: b.x)
