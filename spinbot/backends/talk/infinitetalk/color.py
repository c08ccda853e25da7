"""Per-window colour correction against the reference image (the official `match_and_blend_colors`).

Long generations drift in colour window after window; each decoded frame is pulled back to the reference: in CIE
Lab, each channel is shifted and scaled to the reference's mean and standard deviation (a channel with no spread
is set to the reference's mean), converted back to RGB, clipped, and blended with the frame by `strength`
(the official default is 1: fully corrected).

The official code converts with scikit-image on the CPU, frame by frame (0.14 s a frame at 832x480 on a 2-core
machine: 11 s per 81-frame window). Here the same conversions (scikit-image's formulas and constants: sRGB with
D65, its 0.008856 / 7.787 linear segment, Z < 0 clipped before the inverse) run on the frames where they already
are, the GPU, in float32; tests check them against scikit-image. Written out because it is four formulas, and the
libraries that have them on tensors would be a new dependency for these two functions.
"""

from __future__ import annotations

import torch

# sRGB (D65) <-> CIE XYZ, and the D65 white point (scikit-image's values)
XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
EPSILON, KAPPA = 0.008856, 7.787  # CIE's linear segment of f(t), as scikit-image writes it


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] RGB in [0, 1] -> [..., 3] Lab (L in [0, 100])."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ XYZ_FROM_RGB.T.to(rgb) / WHITE_D65.to(rgb)
    f = torch.where(xyz > EPSILON, xyz.clamp_min(EPSILON) ** (1 / 3), KAPPA * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """[..., 3] Lab -> [..., 3] RGB clipped to [0, 1]."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16) / 116
    f = torch.stack([a / 500 + fy, fy, (fy - b / 200).clamp_min(0)], dim=-1)  # Z < 0 is out of gamut: 0
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / KAPPA) * WHITE_D65.to(lab)
    linear = xyz @ RGB_FROM_XYZ.T.to(lab)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, linear * 12.92)
    return rgb.clamp(0.0, 1.0)


def reference_stats(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lab mean and std (population) per channel of an RGB image [H, W, 3] in [0, 1]."""
    lab = rgb_to_lab(reference.float()).reshape(-1, 3)
    return lab.mean(dim=0), lab.std(dim=0, correction=0)


def match_colors(frames: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], strength: float = 1.0) -> torch.Tensor:
    """RGB frames [T, H, W, 3] in [0, 1] -> colour-matched frames, same shape, float32 in [0, 1]."""
    frames = frames.float().clamp(0.0, 1.0)
    if strength == 0.0:
        return frames
    mean_ref, std_ref = (s.to(frames) for s in stats)
    lab = rgb_to_lab(frames)
    flat = lab.flatten(1, 2)  # per frame statistics
    mean = flat.mean(dim=1)[:, None, None]
    std = flat.std(dim=1, correction=0)[:, None, None]
    scale = torch.where(std == 0, torch.zeros_like(std), std_ref / std.clamp_min(1e-12))
    corrected = lab_to_rgb((lab - mean) * scale + mean_ref)
    return torch.lerp(frames, corrected, strength)
