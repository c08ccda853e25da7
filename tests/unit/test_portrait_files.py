"""Portraits and voices as people have them: cut-out PNGs with a transparent background, iPhone photos (HEIC), a
video with no sound given as the voice. Each gives the picture they see, or one line saying what to send instead."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spinbot.media.image import load_portrait

MAX_PIXELS = 40_000_000
RED, WHITE = (200, 30, 30), (255, 255, 255)


def _cut_out(mode: str) -> Image.Image:
    """Red everywhere, but only the left half opaque, a column half transparent: the right half's red is hidden."""
    alpha = np.zeros((32, 64), np.uint8)
    alpha[:, :32], alpha[:, 40] = 255, 128
    rgba = np.dstack([np.full((32, 64, 3), RED, np.uint8), alpha])
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # a palette PNG whose transparent colour is named by its tRNS chunk
        palette = Image.fromarray(np.where(alpha[..., None] == 255, 0, 1).astype(np.uint8)[..., 0], "P")
        palette.putpalette([*RED, 0, 0, 0] + [0] * 762)
        palette.info["transparency"] = 1
        return palette
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_cut_out_portrait_is_on_white_as_the_page_shows_it(tmp_path, mode):
    # the alpha was dropped: the pixels under the transparent part came out (black for most cut-out tools' PNGs,
    # here red), while the page's preview showed them white
    path = tmp_path / f"cut-out-{mode}.png"
    _cut_out(mode).save(path)
    rgb = load_portrait(path, MAX_PIXELS)
    opaque = rgb[0, 0]
    assert rgb.shape == (32, 64, 3) and (rgb[:, :32] == opaque).all() and (rgb[:, 50:] == WHITE).all()
    if mode != "P":
        assert (np.abs(rgb[:, 40].astype(int) - (opaque.astype(int) + 255) // 2) <= 1).all()  # half way to white
