"""The portrait's size as the official InfiniteTalk pipeline chooses it: a bucket of its 480p or 720p set.

Official `generate_infinitetalk` (`wan/multitalk.py`, `wan/utils/multitalk_utils.py`): the bucket whose aspect ratio
(height / width, the table's key) is nearest to the portrait's, ties to the earlier key; the portrait is resized to
cover the bucket (scale = the larger of the two ratios, sizes rounded up, PIL bilinear, so a small portrait is
enlarged) and centre-cropped (torchvision's offsets: round((size - target) / 2), Python's rounding). The output
frame size is the bucket, whatever the portrait's size. The tables hold (height, width), multiples of 64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from PIL import Image

Buckets = Mapping[str, tuple[int, int]]  # aspect ratio h / w, as the key -> (height, width)

# Official ASPECT_RATIO_627 (--size infinitetalk-480) and ASPECT_RATIO_960 (infinitetalk-720)
BUCKETS: dict[str, Buckets] = {
    "480p": {
        "0.26": (320, 1216),
        "0.38": (384, 1024),
        "0.50": (448, 896),
        "0.67": (512, 768),
        "0.82": (576, 704),
        "1.00": (640, 640),
        "1.22": (704, 576),
        "1.50": (768, 512),
        "1.86": (832, 448),
        "2.00": (896, 448),
        "2.50": (960, 384),
        "2.83": (1088, 384),
        "3.60": (1152, 320),
        "3.80": (1216, 320),
        "4.00": (1280, 320),
    },
    "720p": {
        "0.22": (448, 2048),
        "0.29": (512, 1792),
        "0.36": (576, 1600),
        "0.45": (640, 1408),
        "0.55": (704, 1280),
        "0.63": (768, 1216),
        "0.76": (832, 1088),
        "0.88": (896, 1024),
        "1.00": (960, 960),
        "1.14": (1024, 896),
        "1.31": (1088, 832),
        "1.50": (1152, 768),
        "1.58": (1216, 768),
        "1.82": (1280, 704),
        "1.91": (1344, 704),
        "2.20": (1408, 640),
        "2.30": (1472, 640),
        "2.67": (1536, 576),
        "2.89": (1664, 576),
        "3.62": (1856, 512),
        "3.75": (1920, 512),
    },
}


def bucket_size(width: int, height: int, buckets: Buckets) -> tuple[int, int]:
    """(width, height) of the bucket nearest to the portrait's aspect ratio."""
    ratio = height / width
    key = min(buckets, key=lambda k: abs(float(k) - ratio))  # min keeps the first of equals, as sorted()[0]
    bucket_h, bucket_w = buckets[key]
    return bucket_w, bucket_h


def cover_and_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> [height, width, 3]: scaled to cover (enlarged or shrunk), then centre-cropped."""
    h0, w0 = image.shape[:2]
    scale = max(height / h0, width / w0)
    cover_h, cover_w = math.ceil(scale * h0), math.ceil(scale * w0)
    resized = np.asarray(Image.fromarray(image).resize((cover_w, cover_h), resample=Image.Resampling.BILINEAR))
    top, left = round((cover_h - height) / 2.0), round((cover_w - width) / 2.0)
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


def fit_portrait(image: np.ndarray, buckets: Buckets) -> np.ndarray:
    """The portrait at its bucket's size, as the official pipeline prepares it."""
    width, height = bucket_size(image.shape[1], image.shape[0], buckets)
    return cover_and_crop(image, width, height)
