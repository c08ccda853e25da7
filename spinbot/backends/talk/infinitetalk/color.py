"""Per-window colour correction against the reference image (the official `match_and_blend_colors`).

Long generations drift in colour window after window; each decoded frame is pulled back to the reference: in CIE
Lab, each channel is shifted and scaled to the reference's mean and standard deviation (a channel with no spread
is set to the reference's mean), converted back to RGB, clipped, and blended with the frame by `strength`
(the official default is 1: fully corrected).
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage import color


def reference_stats(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lab mean and std per channel of an RGB image in [0, 1]."""
    lab = color.rgb2lab(reference).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)


def match_colors(frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray], strength: float = 1.0) -> np.ndarray:
    """RGB frames [T, H, W, 3] in [0, 1] (float) -> colour-matched frames, same shape, float64 in [0, 1]."""
    if strength == 0.0:
        return frames
    mean_ref, std_ref = stats
    out = np.empty(frames.shape, dtype=np.float64)
    for i, frame in enumerate(np.clip(frames, 0.0, 1.0)):
        lab = color.rgb2lab(frame)
        mean, std = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0)
        flat = std == 0
        scale = np.where(flat, 0.0, std_ref / np.where(flat, 1.0, std))
        with warnings.catch_warnings():  # out-of-gamut Lab values are clipped, as they should be
            warnings.simplefilter("ignore", UserWarning)
            corrected = np.clip(color.lab2rgb((lab - mean) * scale + mean_ref), 0.0, 1.0)
        out[i] = (1 - strength) * frame + strength * corrected
    return out
