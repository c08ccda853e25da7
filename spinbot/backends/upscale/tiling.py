"""Upscaling a frame too large for one forward: tile by tile, each tile with context around it."""

from __future__ import annotations

from collections.abc import Callable

import torch


def upscale_in_tiles(
    upscale: Callable[[torch.Tensor], torch.Tensor], frame: torch.Tensor, scale: int, tile: int, overlap: int
) -> torch.Tensor:
    """One large frame (1, 3, h, w), tile by tile; each tile is upscaled with `overlap` pixels of context around
    it and only its own part is kept, so the seams see the same context as the interior. (Eager: tiles come in
    several sizes, each of which would need its own compiled graph.)"""
    height, width, s = frame.shape[-2], frame.shape[-1], scale
    out = frame.new_empty(1, 3, height * s, width * s)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            y1, x1 = min(y + tile, height), min(x + tile, width)
            cy, cx = max(0, y - overlap), max(0, x - overlap)
            piece = upscale(frame[..., cy : min(y1 + overlap, height), cx : min(x1 + overlap, width)])
            oy, ox = (y - cy) * s, (x - cx) * s
            out[..., y * s : y1 * s, x * s : x1 * s] = piece[..., oy : oy + (y1 - y) * s, ox : ox + (x1 - x) * s]
    return out
