"""Image input: the header checked before any decode, a decode with a clear error, and sizes for the models
(multiples of 16, aspect kept)."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from spinbot.errors import InputError, InputTooLarge


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(path: Path | str, max_pixels: int) -> ImageHeader:
    """Format and size from the file's header, refused when over max_pixels. No pixel is decoded (Pillow's open
    reads the header only), so a small file that claims 30000x30000 costs nothing here."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(path) as image:
                header = ImageHeader(image.format or "unknown", int(image.size[0]), int(image.size[1]))
    except Image.DecompressionBombError as err:  # Pillow's own ceiling, above any limit the settings allow
        claimed = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(claimed[1]):,}" if claimed else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        raise InputTooLarge(
            f"the image claims {count} pixels, over the limit of {max_pixels:,} pixels (SPINBOT_MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"not a readable image: {path}") from None
    if header.pixels > max_pixels:
        raise InputTooLarge(
            f"the image is {header.width}x{header.height} ({header.pixels:,} pixels), over the limit "
            f"of {max_pixels:,} pixels (SPINBOT_MAX_IMAGE_PIXELS)"
        )
    return header


def load_image(path: Path | str, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3) after its header passed the pixel limit (default: the
    SPINBOT_MAX_IMAGE_PIXELS setting); anything that is not an image, or not one OpenCV decodes, is a one-line
    error."""
    if max_pixels is None:
        from spinbot.settings import get_settings

        max_pixels = get_settings().max_image_pixels
    probe_image(path, max_pixels)
    return _decode(path)


def _decode(path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a file whose header was checked (probe_image)."""
    data = np.fromfile(path, dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:  # a stream OpenCV refuses (its own pixel limit, corrupt data)
        img = None
    if img is None:
        raise InputError(f"not a readable image: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# A portrait's long side at most 4x its short one: wider frames are not a talking head, and past this the lite
# backends kept the aspect into frames libx264 cannot encode (a 20000x64 image failed only at the last node).
MAX_PORTRAIT_ASPECT = 4.0


def load_portrait(path: Path | str, max_pixels: int | None = None) -> np.ndarray:
    """load_image for the portrait a video is made from: its aspect ratio checked from the header first."""
    from spinbot.settings import get_settings

    limit = max_pixels if max_pixels is not None else get_settings().max_image_pixels
    header = probe_image(path, limit)
    long_side, short_side = max(header.width, header.height), min(header.width, header.height)
    if long_side > MAX_PORTRAIT_ASPECT * short_side:
        raise InputTooLarge(  # a limit, like pixels and seconds: the upload route passes its message on
            f"the portrait is {header.width}x{header.height}: one side is more than {MAX_PORTRAIT_ASPECT:g}x the "
            "other (crop it closer to the face)"
        )
    return _decode(path)


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
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
