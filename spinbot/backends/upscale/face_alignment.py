"""Where a face goes: CodeFormer's aligned crop from five landmarks, and the way back into the frame.

Numpy per face (a few microseconds each): the similarity transform from a face's landmarks to the FFHQ template,
and the affine_grid thetas that sample the crop from the frame and the restored crop back over the frame region it
covers; plus the feathered mask that blends the pasted face in.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np
import torch

# The standard five landmarks of an FFHQ-aligned 512x512 face (eyes, nose tip, mouth corners), as CodeFormer
# and GFPGAN align their inputs.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
# For a box that did not come from this backend's detector: where the landmarks sit in a frontal face's box,
# as shares of its width and height.
BOX_LANDMARKS = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.76], [0.64, 0.76]])


def upscaled_points(points: np.ndarray, scale: int) -> np.ndarray:
    """Pixel positions (centres at integers) in a frame enlarged `scale` times: pixel x covers [x-0.5, x+0.5],
    which becomes [s(x-0.5), s(x+0.5)], whose centre pixel index is s*x + (s-1)/2."""
    return points * scale + (scale - 1) / 2


def similarity(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) taking `points` closest to
    `template` in least squares."""
    rows = []
    for (x, y), (u, v) in zip(points, template):
        rows.append(([x, -y, 1, 0], u))
        rows.append(([y, x, 0, 1], v))
    a = np.array([r for r, _ in rows], dtype=np.float64)
    b = np.array([t for _, t in rows], dtype=np.float64)
    (c, s, tx, ty), *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.array([[c, -s, tx], [s, c, ty]])


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0, 0, 1]])


def _to_normalized(width: float, height: float) -> np.ndarray:
    """Pixel index -> grid_sample's [-1, 1] (align_corners=False: pixel i's centre is (2i + 1) / n - 1)."""
    return np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])


def crop_theta(matrix: np.ndarray, frame_size: tuple[int, int], crop: int) -> np.ndarray:
    """affine_grid's theta sampling the crop from the frame: crop (normalized) -> crop pixels -> frame pixels
    (the inverse of `matrix`) -> frame (normalized)."""
    height, width = frame_size
    chain = (
        _to_normalized(width, height) @ np.linalg.inv(_homogeneous(matrix)) @ np.linalg.inv(_to_normalized(crop, crop))
    )
    return chain[:2]


def paste_region(matrix: np.ndarray, crop: int, frame_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The frame rectangle (x0, y0, x1, y1) that the crop square covers, clipped to the frame; None if empty."""
    height, width = frame_size
    low, high = -0.5, crop - 0.5  # the crop's outer pixel edges
    corners = np.array([[low, low, 1], [high, low, 1], [low, high, 1], [high, high, 1]])
    mapped = corners @ np.linalg.inv(_homogeneous(matrix)).T
    x0, y0 = np.floor(mapped[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(mapped[:, :2].max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_theta(matrix: np.ndarray, region: tuple[int, int, int, int], crop: int) -> np.ndarray:
    """affine_grid's theta sampling the crop at every pixel of the frame region: region (normalized) -> region
    pixels -> frame pixels -> crop pixels (`matrix`) -> crop (normalized)."""
    x0, y0, x1, y1 = region
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]])
    chain = _to_normalized(crop, crop) @ _homogeneous(matrix) @ shift @ np.linalg.inv(_to_normalized(x1 - x0, y1 - y0))
    return chain[:2]


def feathered_square(size: int, margin: float, feather: float) -> torch.Tensor:
    """(size, size) float32 mask: 0 within `margin` of the border, rising smoothly to 1 over `feather` (both as
    shares of the side), so a pasted face has no seam and the crop's resampled border never shows."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    edge = torch.minimum(centres, 1 - centres)
    distance = torch.minimum(edge[:, None], edge[None, :])
    ramp = ((distance - margin) / feather).clamp(0, 1)
    return ramp * ramp * (3 - 2 * ramp)


def face_groups(frame_of_face: list[int], per_group: int) -> list[range]:
    """The faces (by the frame each is in, in frame order) in groups of at most `per_group`, or one frame's faces:
    cropped and restored a group at a time, device memory follows the group, not the batch (all of a batch's faces
    at once, each cropped from a float32 copy of its frame: 224 frames of 1664x960 with 8 faces each were 34 GB),
    and a frame's faces are cropped together, before any of them is pasted back (the pixels of all at once)."""
    groups: list[range] = []
    start = end = 0
    for _, faces in groupby(frame_of_face):
        count = sum(1 for _ in faces)
        if end > start and end - start + count > per_group:
            groups.append(range(start, end))
            start = end
        end += count
    return [*groups, range(start, end)] if end > start else groups
