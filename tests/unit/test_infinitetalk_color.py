"""The Lab colour transfer on tensors against scikit-image's conversions (the official code's)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from skimage import color, data

from spinbot.backends.talk.infinitetalk.color import lab_to_rgb, match_colors, reference_stats, rgb_to_lab


def photo() -> np.ndarray:
    return data.astronaut()[::4, ::4] / 255.0


def skimage_match(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The official match_and_blend_colors at strength 1, in scikit-image."""
    ref = color.rgb2lab(reference).reshape(-1, 3)
    lab = color.rgb2lab(frame)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return np.clip(color.lab2rgb((lab - mean) * (ref.std(0) / std) + ref.mean(0)), 0, 1)


def test_rgb_to_lab_matches_skimage():
    rgb = photo()
    ours = rgb_to_lab(torch.from_numpy(rgb).double()).numpy()
    np.testing.assert_allclose(ours, color.rgb2lab(rgb), atol=1e-6)


def test_lab_to_rgb_matches_skimage_out_of_gamut_included():
    lab = np.random.default_rng(0).uniform([0, -120, -120], [100, 120, 120], (64, 64, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = color.lab2rgb(lab)
    np.testing.assert_allclose(lab_to_rgb(torch.from_numpy(lab)).numpy(), expected, atol=1e-6)


def test_match_colors_equals_the_official_transfer():
    reference = photo()
    drifted = np.clip(reference[::-1] * [1.2, 0.9, 0.7] + 0.05, 0, 1)  # another picture, colour-shifted
    stats = reference_stats(torch.from_numpy(reference))
    ours = match_colors(torch.from_numpy(np.stack([drifted, reference])), stats).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], skimage_match(drifted, reference), atol=2e-4)
    np.testing.assert_allclose(ours[1], reference, atol=2e-4)  # the reference itself is left as it is
    # the corrected frame's mean colour moved most of the way to the reference's (gamut clipping keeps it off exact)
    target = color.rgb2lab(reference).reshape(-1, 3).mean(0)
    before = np.linalg.norm(color.rgb2lab(drifted).reshape(-1, 3).mean(0) - target)
    after = np.linalg.norm(color.rgb2lab(ours[0]).reshape(-1, 3).mean(0) - target)
    assert after < 0.25 * before


def test_strength_blends_and_a_flat_channel_takes_the_reference_mean():
    reference = photo()
    stats = reference_stats(torch.from_numpy(reference))
    grey = torch.full((1, 8, 8, 3), 0.5, dtype=torch.float64)
    assert torch.equal(match_colors(grey, stats, 0.0), grey.float())
    full = match_colors(grey, stats, 1.0)
    half = match_colors(grey, stats, 0.5)
    torch.testing.assert_close(half, (grey.float() + full) / 2)
    mean_lab = rgb_to_lab(full.double())[0].reshape(-1, 3).mean(0)
    torch.testing.assert_close(mean_lab, stats[0].double(), atol=0.3, rtol=0)
