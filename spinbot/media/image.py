"""Image input: decode with a clear error, and sizes for the models (multiples of 16, aspect kept)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from spinbot.errors import InputError


def load_image(path: Path | str) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); anything that is not an image is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"not a readable image: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def fit_size(width: int, height: int, max_pixels: int, multiple: int = 16) -> tuple[int, int]:
    """Shrink (never enlarge) to at most max_pixels, keep the aspect, round down to a multiple of `multiple`."""
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def resize_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to exactly (width, height) keeping the aspect: scale to cover, then centre-crop the excess."""
    h0, w0 = img.shape[:2]
    scale = max(width / w0, height / h0)
    new_w, new_h = max(width, round(w0 * scale)), max(height, round(h0 * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(img, (new_w, new_h), interpolation=interp)
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])
