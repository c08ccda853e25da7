"""Lite upscale_video backend: resampling with edge-aware sharpening, and gentle face care, on the CPU.

What it does, frame by frame (no model weights, OpenCV only; for 512x512 -> 1024x1024 on 2 cores about 9 ms of
CPU per frame to upscale and 1-5 ms per face, depending on its size):

1. **Resample** by the factor that `model_name_0` names (`RealESRGAN_x2.pth` -> 2x) with bicubic interpolation.
   (OpenCV's Lanczos-4 measured 11x slower here, for a difference that the sharpening step makes up for.)
2. **Edge-aware sharpening** of the luminance: an unsharp mask (the detail lost to a Gaussian blur whose width
   follows the scale) is added back with a gain that follows local edge strength, measured as the gradient of the
   original frame. Flat areas and low-contrast noise get no gain, so grain and compression blocks are not
   amplified; edges get crisper. The result is clamped to the minimum and maximum of each pixel's 3x3
   neighbourhood before sharpening, so edges steepen without overshoot: no halos, no ringing.
   The same luminance correction is added to R, G and B, so colours are not shifted and no colour fringes appear.
3. **Face care** (standing in for CodeFormer): faces are found with OpenCV's Haar cascade (on a copy of at most
   320 px, which finds talking-head faces at a third of the cost), each confirmed by an eye inside it
   (spinbot.media.faces), so face-like texture is left alone. In each face region, skin is smoothed with an
   edge-preserving guided filter: texture and noise below a contrast threshold (the sharpening grain, compression
   noise) are smoothed, while eyes, brows, lips and the face outline stay sharp. The result is blended back with
   a feathered elliptical mask, so the face gets gentler sharpening than the rest of the frame and no seam.
   `codeformer_fidelity` sets the blend: 1 (most fidelity to the upscaled input) applies a light 35% touch,
   0 applies the full smoothing.

The trained models that `model_name_0`, `model_name_1` and `facedetection` name are not loaded (only the factor
is read from the first name): the node output reports them as ignored. The native backend (RealESRGAN +
CodeFormer) implements the same interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from spinbot.backends.upscale.base import UpscaleBackend, feathered_ellipse, scale_from_model_name
from spinbot.media.faces import Box, detect_faces

if TYPE_CHECKING:
    from spinbot.tasks.upscale import AIUpscalerParams

# Sharpening: gain at full edge strength, and the gradient (grey levels per pixel) where the gain starts and
# where it is full. Below EDGE_LOW is flat area or noise.
SHARPEN_GAIN = 1.0
EDGE_LOW, EDGE_HIGH = 6.0, 30.0
# The clamp's neighbourhood: a pixel and its 8 neighbours (OpenCV's default erode/dilate kernel).
NEIGHBOURHOOD = np.ones((3, 3), np.uint8)
# Detection runs on a copy whose longer side is at most this: faces in a talking head are large.
DETECT_MAX_SIDE = 320
# Face region around a detected box (the Haar box spans brows to mouth): share of the box added on each side.
FACE_PAD_X, FACE_PAD_Y = 0.2, 0.3
FACE_FEATHER = 0.3
# Restoration weight at fidelity 1 (the least restoration); fidelity 0 gives weight 1.
LIGHTEST_RESTORATION = 0.35
# Grey-level contrast below which the face filter treats detail as skin texture to smooth.
SKIN_SMOOTHING = 10.0


class ResampleUpscaler(UpscaleBackend):
    name = "resample"
    honoured = frozenset({"batch_size", "codeformer_fidelity", "frame_load_cap"})
    scale = 2

    def load(self, params: AIUpscalerParams) -> None:
        self.scale = scale_from_model_name(params.model_name_0)

    def detect_faces(self, frame: np.ndarray) -> list[Box]:
        return detect_faces(frame, max_side=DETECT_MAX_SIDE)

    def upscale_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return [self._upscale(frame) for frame in frames]

    def _upscale(self, frame: np.ndarray) -> np.ndarray:
        # Integer arithmetic throughout (saturating OpenCV ops): float images cost twice the time here.
        height, width = frame.shape[:2]
        size = (width * self.scale, height * self.scale)
        upscaled = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
        luma = cv2.cvtColor(upscaled, cv2.COLOR_RGB2GRAY)
        sharpened = self._sharpen_luma(luma, self._edge_gain(frame, size))
        correction = cv2.subtract(sharpened, luma, dtype=cv2.CV_16S)
        return cv2.add(upscaled, cv2.merge([correction] * 3), dtype=cv2.CV_8U)

    def _edge_gain(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Sharpening gain per output pixel as uint8 (255 = full gain): a ramp over the gradient of the original
        frame (cheaper than the upscaled one, and not fooled by the interpolation's own smoothness)."""
        luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        gradient = cv2.magnitude(cv2.Sobel(luma, cv2.CV_32F, 1, 0), cv2.Sobel(luma, cv2.CV_32F, 0, 1))
        # Sobel's 3x3 kernel weighs the gradient 4x, hence the 4s. addWeighted with a uint8 result computes
        # slope * gradient + offset and clips it to [0, 255] in one pass: the ramp.
        slope = 255 / (4 * (EDGE_HIGH - EDGE_LOW))
        ramp = cv2.addWeighted(gradient, slope, gradient, 0, -4 * EDGE_LOW * slope, dtype=cv2.CV_8U)
        return cv2.resize(ramp, size, interpolation=cv2.INTER_LINEAR)

    def _sharpen_luma(self, luma: np.ndarray, gain: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(luma, (0, 0), 0.6 * self.scale)
        detail = cv2.subtract(luma, blurred, dtype=cv2.CV_16S)
        boost = cv2.multiply(detail, gain, scale=SHARPEN_GAIN / 255, dtype=cv2.CV_16S)
        sharpened = cv2.add(luma, boost, dtype=cv2.CV_8U)
        # Clamp to the neighbourhood's range: the edge gets steeper but never overshoots (a halo).
        return cv2.min(cv2.max(sharpened, cv2.erode(luma, NEIGHBOURHOOD)), cv2.dilate(luma, NEIGHBOURHOOD))

    def restore_faces(self, frame: np.ndarray, boxes: list[Box], fidelity: float) -> np.ndarray:
        strength = 1 - (1 - LIGHTEST_RESTORATION) * fidelity
        for box in boxes:
            self._restore_face(frame, box, strength)
        return frame

    def _restore_face(self, frame: np.ndarray, box: Box, strength: float) -> None:
        """Smooth the skin in one face region in place, blended by a feathered ellipse times `strength`."""
        height, width = frame.shape[:2]
        pad_x, pad_y = round(box.w * FACE_PAD_X), round(box.h * FACE_PAD_Y)
        x0, y0 = max(0, box.x - pad_x), max(0, box.y - pad_y)
        x1, y1 = min(width, box.x + box.w + pad_x), min(height, box.y + box.h + pad_y)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        region = frame[y0:y1, x0:x1]
        # The filter's reach follows the face size, so that skin texture, not features, is what gets smoothed.
        keep, offset = skin_smoothing_coefficients(region, radius=max(2, box.w // 40), eps=SKIN_SMOOTHING**2)
        # Blend (region + weight * (smoothed - region)) folded into the coefficients at half resolution, so that
        # full resolution sees one multiply-add: out = gain * region + shift.
        rows, cols = keep.shape[:2]
        weight = feathered_ellipse(rows, cols, FACE_FEATHER)[..., None] * strength
        gain = 1 + weight * (keep - 1)
        shift = weight * offset
        size = (x1 - x0, y1 - y0)
        gain = cv2.resize(gain, size, interpolation=cv2.INTER_LINEAR)
        shift = cv2.resize(shift, size, interpolation=cv2.INTER_LINEAR)
        frame[y0:y1, x0:x1] = cv2.add(cv2.multiply(region, gain, dtype=cv2.CV_32F), shift, dtype=cv2.CV_8U)


def skin_smoothing_coefficients(image: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The self-guided filter (He, Sun and Tang) as its linear coefficients at half resolution, as in He and
    Sun's fast guided filter: the smoothed image is keep * image + offset, with both upsampled.

    Where a window's variance is well below `eps` (skin texture, noise) keep is 0 and the result is the local
    mean; where it is well above (eyes, brows, lips, the face outline) keep is 1 and the pixel stays. Box
    filters only: a face region costs about a millisecond where a bilateral filter costs nine.
    """
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    window = (2 * max(1, radius // 2) + 1,) * 2
    mean = cv2.boxFilter(small, -1, window)
    variance = cv2.boxFilter(small * small, -1, window) - mean * mean
    keep = variance / (variance + eps)
    offset = mean - keep * mean
    return cv2.boxFilter(keep, -1, window), cv2.boxFilter(offset, -1, window)
