"""The interface every upscale_video backend implements (lite: CPU resampling; native: RealESRGAN + CodeFormer).

The task owns the workflow (decode, batching, face tracking, encode, audio); a backend only turns pixels into
pixels. Frames are RGB uint8 arrays; face boxes are media.faces.Box in the coordinates of the frame they go with.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import PurePath
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from spinbot.errors import ParamsError
from spinbot.media.faces import Box

if TYPE_CHECKING:
    from spinbot.tasks.upscale import AIUpscalerParams

# "RealESRGAN_x2.pth", "RealESRGAN_x4plus", "realesr-animevideov3-x2": an x before the digit;
# "4x-UltraSharp.pth", "2x_foo": an x after it. The digit is not part of a longer number (x264 is no factor).
_FACTOR_PATTERNS = (
    re.compile(r"(?<![a-z0-9])x([1-8])(?![0-9])", re.IGNORECASE),
    re.compile(r"(?<![a-z0-9])([1-8])x(?![0-9])", re.IGNORECASE),
)


def scale_from_model_name(name: str) -> int:
    """The upscale factor a model file names, as upscaler checkpoints are conventionally named."""
    stem = PurePath(name).name
    for pattern in _FACTOR_PATTERNS:
        found = pattern.search(stem)
        if found:
            return int(found.group(1))
    raise ParamsError(
        f"model_name_0 {name!r} names no upscale factor: name the model by its factor, "
        "e.g. RealESRGAN_x2.pth, RealESRGAN_x4plus.pth or 4x-UltraSharp.pth"
    )


class UpscaleBackend(ABC):
    """Pixels in, pixels out. load() first; then the task calls the other methods batch by batch."""

    name: ClassVar[str]
    # AIUpscalerParams fields this backend acts on; the others are reported as ignored in the node output.
    honoured: ClassVar[frozenset[str]]
    scale: int

    @abstractmethod
    def load(self, params: AIUpscalerParams) -> None:
        """Prepare for these params (set `scale`, load models); raise ParamsError for a model it cannot use."""

    @abstractmethod
    def detect_faces(self, frame: np.ndarray) -> list[Box]:
        """Faces in an input-resolution frame, largest first."""

    @abstractmethod
    def upscale_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Each frame enlarged exactly `scale` times in both dimensions."""

    @abstractmethod
    def restore_faces(self, frame: np.ndarray, boxes: list[Box], fidelity: float) -> np.ndarray:
        """Restore the faces in an upscaled frame (boxes in its coordinates; the frame may be changed in place) and
        blend them back with a feathered mask. fidelity 1 stays closest to the upscaled input, 0 applies the most
        restoration (CodeFormer's w)."""

    # Optional: `stream(frames, fidelity, batch_size=None) -> Iterator[(upscaled frame, faces restored)]`. A backend
    # that overlaps decoding, device work and encoding itself provides it, and the task uses it instead of its own
    # batch loop, with the batch_size it allows (tasks/upscale.py: BATCH_BYTES; None: the params' own).


def feathered_ellipse(height: int, width: int, feather: float) -> np.ndarray:
    """A float32 mask in [0, 1]: 1 inside the ellipse inscribed in the box, falling smoothly to 0 at its edge
    over the outer `feather` share of its radius, so that a pasted face leaves no seam."""
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / (height / 2)
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / (width / 2)
    radius = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    ramp = np.clip((1 - radius) / feather, 0, 1)
    return ramp * ramp * (3 - 2 * ramp)
