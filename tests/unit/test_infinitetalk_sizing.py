"""The native backend sizes portraits as the official InfiniteTalk pipeline does (sizing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spinbot.backends.talk.infinitetalk.sizing import BUCKETS, bucket_size, cover_and_crop, fit_portrait


def test_a_small_square_portrait_is_enlarged_to_the_480p_square_bucket():
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = fit_portrait(image, BUCKETS["480p"])
    assert out.shape == (640, 640, 3) and out.dtype == np.uint8
    assert fit_portrait(image, BUCKETS["720p"]).shape == (960, 960, 3)


@pytest.mark.parametrize(
    "size, expected",
    [
        ((832, 480), (896, 448)),  # h / w = 0.577: key 0.50 (0.077 away; 0.67 is 0.093 away)
        ((480, 832), (448, 832)),  # 1.733: key 1.86 (0.127 away; 1.50 is 0.233 away)
        ((1000, 1000), (640, 640)),
        ((100, 1000), (320, 1280)),  # 10.0, beyond the table: its last key, 4.00
    ],
)
def test_the_bucket_of_the_nearest_aspect_ratio(size, expected):
    assert bucket_size(*size, BUCKETS["480p"]) == expected


def test_every_bucket_is_a_multiple_of_64_and_the_720p_set_is_larger():
    for buckets in BUCKETS.values():
        assert all(h % 64 == 0 and w % 64 == 0 for h, w in buckets.values())
    area = {name: np.mean([h * w for h, w in b.values()]) for name, b in BUCKETS.items()}
    assert area["720p"] > 2 * area["480p"]


def test_cover_scales_by_the_larger_ratio_rounds_up_and_crops_the_centre():
    # a 30x44 (w x h) gradient into 32x32: scale 32/30, covered 32x47 (46.93 rounded up), top offset round(7.5) = 8
    yy, xx = np.mgrid[0:44, 0:30]
    image = np.stack([xx * 8, yy * 5, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    out = cover_and_crop(image, 32, 32)
    covered = np.asarray(Image.fromarray(image).resize((32, 47), resample=Image.BILINEAR))
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out, covered[8:40, 0:32])
