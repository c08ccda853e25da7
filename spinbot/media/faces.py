"""Face and eye detection with the Haar cascades that ship inside the OpenCV wheel (no download)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    @property
    def area(self) -> int:
        return self.w * self.h


@lru_cache(maxsize=4)
def _cascade(name: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if cascade.empty():
        raise RuntimeError(f"OpenCV cascade {name} is missing from the cv2 wheel")
    return cascade


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def detect_faces(rgb: np.ndarray, min_fraction: float = 0.08) -> list[Box]:
    """Frontal faces, largest first; min_fraction is the smallest face side relative to the image's shorter side."""
    gray = _gray(rgb)
    side = int(min(gray.shape) * min_fraction)
    found = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(max(side, 24), max(side, 24)))
    boxes = [Box(int(x), int(y), int(w), int(h)) for x, y, w, h in found]
    return sorted(boxes, key=lambda b: b.area, reverse=True)


def detect_eyes(rgb: np.ndarray, face: Box) -> list[Box]:
    """Eyes inside the upper half of a face box, in image coordinates, left to right."""
    top = rgb[face.y:face.y + face.h // 2, face.x:face.x + face.w]
    if top.size == 0:
        return []
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        _gray(top), scaleFactor=1.1, minNeighbors=5, minSize=(max(face.w // 10, 8), max(face.w // 10, 8)))
    eyes = [Box(face.x + int(x), face.y + int(y), int(w), int(h)) for x, y, w, h in found]
    eyes = sorted(eyes, key=lambda b: b.area, reverse=True)[:2]
    return sorted(eyes, key=lambda b: b.x)
