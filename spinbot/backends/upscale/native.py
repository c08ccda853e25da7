"""Native upscale_video backend: Real-ESRGAN / ESRGAN upscaling and CodeFormer face restoration, on the GPU.

Models, from SPINBOT_MODELS_DIR as docs/models.md lays it out:
- `model_name_0` in `upscale_models/`: an upscaler checkpoint that spandrel recognises (RealESRGAN_x2plus with its
  pixel-unshuffle input, RealESRGAN_x4plus, old-arch ESRGAN, ...). The upscale factor is the model's own.
- `model_name_1` in `facerestore_models/`: CodeFormer (spandrel_extra_arches).
- `facedetection`: `retinaface_resnet50`, from `facedetection/detection_Resnet50_Final.pth` (retinaface.py).

Each batch of frames, on the device:
1. faces are found in the input frames (RetinaFace; a frame whose shorter side is over 640 px is shrunk first, as
   CodeFormer's own inference does);
2. the frames are upscaled, in sub-batches bounded by pixel count, and in tiles when a frame is too large;
3. each face is aligned to CodeFormer's 512x512 crop: a least-squares similarity transform from its five
   landmarks (scaled to the upscaled frame) to the standard FFHQ template, sampled from the upscaled frame;
4. CodeFormer restores the crops with w = `codeformer_fidelity`;
5. each restored face goes back through the inverse transform and is blended in with a feathered mask, over its
   own bounding region only.
On CUDA the upscaler and the detector run in float16 and CodeFormer under bfloat16 autocast (its spandrel
descriptor rules out float16, and its codebook lookup mixes dtypes, which autocast reconciles); float32 on CPU.

The task drives the protocol methods batch by batch, which is correct but serial (8.6 fps at 832x480 -> 1664x960
on an H100). `stream()` is the fast path (34.5 fps there, benchmarks/results/upscale_gpu.json):
- decoding, the device work and the caller's encoding run in three threads joined by bounded queues;
- the device thread never waits for the device except for the detections, which it queues before the upscale
  so that the device upscales while the CPU places the faces (small uploads go through pinned memory: a copy
  from pageable memory would wait for everything queued before it);
- both models are torch.compile'd (config.compile): Inductor fuses the element-wise work around the
  convolutions (RRDBNet: 28 -> 18 ms a frame; CodeFormer: 10 -> 4.6 ms a face). Compiling costs about three
  minutes on the first batch of a fresh machine (the Inductor cache on disk makes it about 30 s in later
  processes), once per frame size; a failed compile falls back to eager.
Leave torch.backends.cudnn.benchmark off: PyTorch keeps cuDNN's tuned plans per thread, so the device thread
(a new one for each video) would tune again each time (measured: 9.9 fps instead of 24.2, eager).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue
from types import MethodType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from spinbot.errors import BackendUnavailable, ParamsError

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the registry imports this module by name: say what to install, in one line
    raise BackendUnavailable("upscale_video native needs PyTorch: pip install 'spinbot[gpu]'") from None

from spinbot.backends.upscale.base import UpscaleBackend  # noqa: E402
from spinbot.backends.upscale.retinaface import (  # noqa: E402
    Faces, PendingFaces, RetinaFaceConfig, RetinaFaceDetector, load_retinaface)
from spinbot.media.faces import Box  # noqa: E402

if TYPE_CHECKING:
    from spinbot.tasks.upscale import AIUpscalerParams

T = TypeVar("T")
log = logging.getLogger(__name__)

# The standard five landmarks of an FFHQ-aligned 512x512 face (eyes, nose tip, mouth corners), as CodeFormer
# and GFPGAN align their inputs.
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float64)
# For a box that did not come from this backend's detector: where the landmarks sit in a frontal face's box,
# as shares of its width and height.
BOX_LANDMARKS = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.76], [0.64, 0.76]])
DETECTOR_FILES = {"retinaface_resnet50": "detection_Resnet50_Final.pth"}


@dataclass(frozen=True)
class NativeConfig:
    half: bool = True  # on CUDA, half precision where the model allows it (False: float32 throughout)
    face_confidence: float = 0.97  # facexlib's face-restoration threshold; 1.0 finds no face
    max_faces: int = 8  # per frame, largest first
    min_eye_distance: float = 8.0  # input pixels: smaller faces gain nothing, and their alignment is unstable
    detect_short_side: int = 640  # detection input is shrunk to this shorter side
    face_size: int = 512  # CodeFormer's crop
    mask_margin: float = 0.04  # share of the crop left out at its border when pasting back
    mask_feather: float = 0.12  # share of the crop over which the paste mask rises from 0 to 1
    batch_pixels: int = 16 * 832 * 480  # input pixels per upscaler or detector forward: bounds activations
    faces_per_forward: int = 16  # CodeFormer crops per forward (about 200 MB of activations each)
    tile: int = 1024  # frames with a longer side than this are upscaled in tiles of this size ...
    tile_overlap: int = 32  # ... each seeing this much context on every side
    queue_depth: int = 2  # batches waiting between pipeline stages
    compile: bool = True  # CUDA fast path: torch.compile both models (fuses their many small element-wise ops)


DEFAULT_CONFIG = NativeConfig()


@dataclass
class Models:
    upscaler: Any  # spandrel ImageModelDescriptor (handles padding to the model's size multiple)
    restorer: torch.nn.Module  # CodeFormer
    restorer_autocast: torch.dtype | None
    detector: RetinaFaceDetector
    dtype: torch.dtype  # of the upscaler, and of the frames between the steps

    @property
    def scale(self) -> int:
        return int(self.upscaler.scale)


class NativeUpscaler(UpscaleBackend):
    name = "native"
    honoured = frozenset({"model_name_0", "model_name_1", "facedetection", "batch_size", "codeformer_fidelity",
                          "frame_load_cap"})
    scale = 2
    face_detection_every = 1  # stream() detects on every frame: batched on the device, it costs ~2 ms a frame

    def __init__(self, device: str | torch.device | None = None, config: NativeConfig | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = config or DEFAULT_CONFIG
        self.models: Models | None = None
        self.batch_size = 1
        self._mask: torch.Tensor | None = None
        # Landmarks of the faces detect_faces() found, by their box in upscaled coordinates (the task scales the
        # boxes it gets and hands them back to restore_faces()).
        self._landmarks: dict[Box, np.ndarray] = {}

    # ---- protocol -------------------------------------------------------------------------------------------

    def load(self, params: AIUpscalerParams) -> None:
        self.models = load_models(params, self.device, self.config.half)
        self.scale = self.models.scale
        self.batch_size = params.batch_size

    def detect_faces(self, frame: np.ndarray) -> list[Box]:
        faces = self._detect(self._to_device(torch.from_numpy(frame[None])))[0]
        boxes = []
        for (x0, y0, x1, y1), points in zip(faces.boxes, faces.landmarks):
            box = Box(round(x0), round(y0), round(x1 - x0), round(y1 - y0))
            self._remember(Box(box.x * self.scale, box.y * self.scale, box.w * self.scale, box.h * self.scale),
                           upscaled_points(points, self.scale))
            boxes.append(box)
        return sorted(boxes, key=lambda b: b.area, reverse=True)

    @torch.inference_mode()
    def upscale_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        upscaled = self._upscale(self._to_device(torch.from_numpy(np.stack(frames))))
        return list(to_uint8(upscaled).cpu().numpy())

    @torch.inference_mode()
    def restore_faces(self, frame: np.ndarray, boxes: list[Box], fidelity: float) -> np.ndarray:
        upscaled = self._to_device(torch.from_numpy(frame[None]))
        transforms = [(0, similarity(self._landmarks_for(box), self._template())) for box in boxes]
        self._restore(upscaled, transforms, fidelity)
        return to_uint8(upscaled)[0].cpu().numpy()

    # ---- fast path ------------------------------------------------------------------------------------------

    def stream(self, frames: Iterable[np.ndarray], fidelity: float) -> Iterator[tuple[np.ndarray, int]]:
        """Each frame upscaled with its faces restored, in order, with the number of faces restored in it.

        Three threads: one pulls frames from `frames` (decoding) and packs batches of `batch_size`, one runs
        them on the device, and the caller's, which consumes this iterator (encoding). The queues between them
        hold `queue_depth` batches, so memory stays bounded by the batch size, not the video's length.
        """
        depth = self.config.queue_depth
        batches = prefetch(iter(frames), depth, self._pack, group=self.batch_size)
        launched = prefetch(batches, depth, lambda batch: self._launch(batch, fidelity))
        for host, ready, counts in launched:
            if ready is not None:
                ready.synchronize()  # the device-to-host copy of this batch has landed
            yield from zip(host.numpy(), counts)

    def _pack(self, frames: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(frames))
        # Pinned memory lets the device copy it asynchronously.
        return batch.pin_memory() if self.device.type == "cuda" else batch

    @torch.inference_mode()
    def _launch(self, batch: torch.Tensor, fidelity: float) -> tuple[torch.Tensor, Any, list[int]]:
        """Queue one batch's device work and its copy back; returns without waiting for either (except for the
        detections, which the CPU needs to place the faces)."""
        out, counts = self._process(batch, fidelity)
        if self.device.type != "cuda":
            return out.cpu(), None, counts
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready, counts

    def _process(self, batch: torch.Tensor, fidelity: float) -> tuple[torch.Tensor, list[int]]:
        frames = self._to_device(batch)
        # Queue the detection, then the upscale, and only then wait for the detections: the device upscales
        # while this thread places the faces, so it never waits idle for the CPU.
        pending = self._launch_detection(frames)
        upscaled = self._upscale(frames, fast=True)
        faces = self._faces(*pending)
        transforms = [(i, similarity(upscaled_points(points, self.scale), self._template()))
                      for i, found in enumerate(faces) for points in found.landmarks]
        self._restore(upscaled, transforms, fidelity, fast=True)
        return to_uint8(upscaled), [len(found) for found in faces]

    # ---- steps ----------------------------------------------------------------------------------------------

    def _to_device(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, h, w, 3) uint8 -> (b, 3, h, w) in [0, 1], in the models' dtype, on the device."""
        frames = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return frames.to(self._models.dtype).div_(255)

    @torch.inference_mode()
    def _detect(self, frames: torch.Tensor) -> list[Faces]:
        return self._faces(*self._launch_detection(frames))

    def _launch_detection(self, frames: torch.Tensor) -> tuple[list[PendingFaces], np.ndarray]:
        height, width = frames.shape[-2:]
        shrink = min(1.0, self.config.detect_short_side / min(height, width))
        size = (max(1, round(height * shrink)), max(1, round(width * shrink)))
        if size != (height, width):
            frames = F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)
        per_forward = max(1, self.config.batch_pixels // (size[0] * size[1]))
        detector = self._models.detector
        pending = [detector.launch(chunk, self.config.face_confidence) for chunk in frames.split(per_forward)]
        return pending, np.array([width / size[1], height / size[0]])

    def _faces(self, pending: list[PendingFaces], grow: np.ndarray) -> list[Faces]:
        return [self._keep(faces, grow) for chunk in pending for faces in chunk.result()]

    def _keep(self, faces: Faces, grow: np.ndarray) -> Faces:
        """Back to input pixels; faces too small to restore dropped; the largest max_faces kept."""
        boxes, landmarks = faces.boxes * np.tile(grow, 2), faces.landmarks * grow
        eyes = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1) if len(faces) else np.zeros(0)
        area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0), axis=1)
        order = [i for i in np.argsort(-area, kind="stable") if eyes[i] >= self.config.min_eye_distance]
        order = order[: self.config.max_faces]
        return Faces(boxes[order], faces.scores[order], landmarks[order])

    def _upscale(self, frames: torch.Tensor, fast: bool = False) -> torch.Tensor:
        height, width = frames.shape[-2:]
        if max(height, width) > self.config.tile:
            return torch.cat([self._upscale_tiled(frame[None]) for frame in frames])
        per_forward = max(1, self.config.batch_pixels // (height * width))
        return torch.cat([self._run_upscaler(chunk, fast) for chunk in frames.split(per_forward)])

    def _run_upscaler(self, frames: torch.Tensor, fast: bool = False) -> torch.Tensor:
        if self.device.type == "cuda":
            frames = frames.contiguous(memory_format=torch.channels_last)
        compiled = self._compiled("upscaler") if fast else None
        if compiled is None:
            return self._models.upscaler(frames)
        descriptor = self._models.upscaler
        return self._with_fallback("upscaler", lambda: run_compiled_upscaler(compiled, descriptor, frames),
                                   lambda: descriptor(frames))

    def _upscale_tiled(self, frame: torch.Tensor) -> torch.Tensor:
        """One large frame, tile by tile; each tile is upscaled with `tile_overlap` pixels of context around it
        and only its own part is kept, so the seams see the same context as the interior. (Eager: tiles come in
        several sizes, each of which would need its own compiled graph.)"""
        height, width, s = frame.shape[-2], frame.shape[-1], self.scale
        tile, pad = self.config.tile, self.config.tile_overlap
        out = frame.new_empty(1, 3, height * s, width * s)
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                y1, x1 = min(y + tile, height), min(x + tile, width)
                cy, cx = max(0, y - pad), max(0, x - pad)
                piece = self._run_upscaler(frame[..., cy:min(y1 + pad, height), cx:min(x1 + pad, width)])
                oy, ox = (y - cy) * s, (x - cx) * s
                out[..., y * s:y1 * s, x * s:x1 * s] = piece[..., oy:oy + (y1 - y) * s, ox:ox + (x1 - x) * s]
        return out

    def _restore(self, frames: torch.Tensor, transforms: list[tuple[int, np.ndarray]], fidelity: float,
                 fast: bool = False) -> None:
        """Restore the faces at `transforms` (frame index, 2x3 frame-to-crop matrix) in `frames`, in place."""
        if not transforms:
            return
        size = self.config.face_size
        height, width = frames.shape[-2:]
        regions = [paste_region(matrix, size, (height, width)) for _, matrix in transforms]
        crop_thetas = [crop_theta(matrix, (height, width), size) for _, matrix in transforms]
        paste_thetas = [paste_theta(matrix, region, size) if region else np.eye(3)[:2]
                        for (_, matrix), region in zip(transforms, regions)]
        thetas = self._upload(np.stack(crop_thetas + paste_thetas))
        crops = self._crop(frames, [index for index, _ in transforms], thetas[: len(transforms)])
        restored = torch.cat([self._run_restorer(chunk, fidelity, fast)
                              for chunk in crops.split(self.config.faces_per_forward)])
        for (index, _), face, theta, region in zip(transforms, restored, thetas[len(transforms):], regions):
            if region is not None:
                self._paste(frames[index], face, theta, region)

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """A small float32 array to the device without waiting: from pageable memory, a copy would stall this
        thread until the device had finished everything queued before it."""
        tensor = torch.from_numpy(array.astype(np.float32))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _crop(self, frames: torch.Tensor, indices: list[int], thetas: torch.Tensor) -> torch.Tensor:
        size = self.config.face_size
        grid = F.affine_grid(thetas, [len(indices), 3, size, size], align_corners=False)
        # float32: the grid's positions need its bits; a stack of views, as a list index would stall on a copy.
        sources = torch.stack([frames[i] for i in indices]).float()
        return F.grid_sample(sources, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _run_restorer(self, crops: torch.Tensor, fidelity: float, fast: bool = False) -> torch.Tensor:
        x = crops * 2 - 1  # CodeFormer works in [-1, 1]
        compiled = self._compiled("restorer") if fast else None
        if compiled is None:
            out = self._call_restorer(self._models.restorer, x, fidelity)
        else:
            out = self._with_fallback("restorer", lambda: self._call_restorer(compiled, pad_batch(x), fidelity),
                                      lambda: self._call_restorer(self._models.restorer, x, fidelity))
        return ((out[: len(crops)].float() + 1) / 2).clamp_(0, 1)

    def _call_restorer(self, model: Any, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        autocast = self._models.restorer_autocast
        if autocast is None:
            return model(x, weight=fidelity)[0]
        with torch.autocast(self.device.type, dtype=autocast):
            return model(x, weight=fidelity)[0]

    def _paste(self, frame: torch.Tensor, face: torch.Tensor, theta: torch.Tensor,
               region: tuple[int, int, int, int]) -> None:
        """Blend one restored face (3, S, S) into `frame` (3, H, W) over `region`, sampling it through `theta`
        (paste_theta: region -> crop)."""
        x0, y0, x1, y1 = region
        grid = F.affine_grid(theta[None], [1, 4, y1 - y0, x1 - x0], align_corners=False)
        source = torch.cat([face, self._feather_mask()])[None]
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        target = frame[:, y0:y1, x0:x1]
        base = target.float()
        target.copy_(base + warped[3:] * (warped[:3] - base))

    def _compiled(self, role: str) -> Any:
        """The compiled model for the fast path (CUDA, config.compile), or None."""
        if not (self.config.compile and self.device.type == "cuda"):
            return None
        module = self._models.upscaler.model if role == "upscaler" else self._models.restorer
        return compiled_module(module)

    def _with_fallback(self, role: str, compiled_call: Callable[[], T], eager_call: Callable[[], T]) -> T:
        """Run the compiled model; if compiling fails, say so once and stay eager for this model."""
        try:
            return compiled_call()
        except Exception as err:  # noqa: BLE001 - any compiler failure: the eager model computes the same
            module = self._models.upscaler.model if role == "upscaler" else self._models.restorer
            _compiled_modules[id(module)] = (module, None)
            log.warning("torch.compile failed for the %s, running it eager: %s", role, str(err).splitlines()[0])
            return eager_call()

    def _feather_mask(self) -> torch.Tensor:
        if self._mask is None:
            self._mask = feathered_square(self.config.face_size, self.config.mask_margin,
                                          self.config.mask_feather).to(self.device)[None]
        return self._mask

    # ---- helpers --------------------------------------------------------------------------------------------

    @property
    def _models(self) -> Models:
        if self.models is None:
            raise RuntimeError("NativeUpscaler.load() must run first")
        return self.models

    def _template(self) -> np.ndarray:
        return FFHQ_TEMPLATE_512 * (self.config.face_size / 512)

    def _remember(self, box: Box, points: np.ndarray) -> None:
        self._landmarks[box] = points
        while len(self._landmarks) > 64:  # the task holds boxes for a few detections at most
            self._landmarks.pop(next(iter(self._landmarks)))

    def _landmarks_for(self, box: Box) -> np.ndarray:
        points = self._landmarks.get(box)
        if points is None:
            return np.array([box.x, box.y]) + BOX_LANDMARKS * np.array([box.w, box.h])
        return points


# ---- geometry (numpy, per face: a few microseconds) -----------------------------------------------------------


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
    chain = (_to_normalized(width, height) @ np.linalg.inv(_homogeneous(matrix))
             @ np.linalg.inv(_to_normalized(crop, crop)))
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
    chain = (_to_normalized(crop, crop) @ _homogeneous(matrix) @ shift
             @ np.linalg.inv(_to_normalized(x1 - x0, y1 - y0)))
    return chain[:2]


def feathered_square(size: int, margin: float, feather: float) -> torch.Tensor:
    """(size, size) float32 mask: 0 within `margin` of the border, rising smoothly to 1 over `feather` (both as
    shares of the side), so a pasted face has no seam and the crop's resampled border never shows."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    edge = torch.minimum(centres, 1 - centres)
    distance = torch.minimum(edge[:, None], edge[None, :])
    ramp = ((distance - margin) / feather).clamp(0, 1)
    return ramp * ramp * (3 - 2 * ramp)


# ---- compiled models ------------------------------------------------------------------------------------------

_compiled_modules: dict[int, Any] = {}
_compile_lock = threading.Lock()


def compiled_module(module: torch.nn.Module) -> Any | None:
    """torch.compile'd once per loaded module (compilation is the expensive part: about a minute for each of
    the two models on the first batch; the on-disk Inductor cache shortens it in later processes). The batch
    dimension is dynamic from the start, so the last, shorter batch of a video does not compile again."""
    with _compile_lock:
        key = id(module)
        if key not in _compiled_modules:
            _compiled_modules[key] = (module, torch.compile(module))  # the pair keeps the id in use
        return _compiled_modules[key][1]


def pad_batch(x: torch.Tensor) -> torch.Tensor:
    """Mark the batch dimension dynamic, repeating the item of a batch of one (Dynamo would specialise a size
    of one into a graph of its own, compiled again)."""
    if len(x) == 1:
        x = torch.cat([x, x])
    torch._dynamo.mark_dynamic(x, 0)
    return x


def run_compiled_upscaler(compiled: Any, descriptor: Any, frames: torch.Tensor) -> torch.Tensor:
    """What spandrel's descriptor call does (pad to the model's size multiple, run, clamp, crop), around the
    compiled module."""
    count, height, width = len(frames), frames.shape[-2], frames.shape[-1]
    pad_w, pad_h = descriptor.size_requirements.get_padding(width, height)
    if pad_w or pad_h:  # as spandrel pads: reflected as far as the image allows, then repeated
        reflect_w, reflect_h = min(pad_w, width - 1), min(pad_h, height - 1)
        frames = F.pad(frames, (0, reflect_w, 0, reflect_h), mode="reflect")
        frames = F.pad(frames, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    out = compiled(pad_batch(frames))
    s = descriptor.scale
    return out[:count, :, : height * s, : width * s].clamp_(0, 1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """(b, 3, h, w) in [0, 1] -> (b, h, w, 3) uint8, on the same device."""
    out = frames.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous()


# ---- the pipeline's threads -----------------------------------------------------------------------------------


class _End:
    def __init__(self, error: BaseException | None = None):
        self.error = error


def prefetch(source: Iterator[Any], depth: int, work: Callable[[Any], T], group: int = 0) -> Iterator[T]:
    """work(item) for each item of `source` (or each list of `group` items), computed in a background thread
    that runs at most `depth` results ahead. An error in the thread is raised here; closing this iterator stops
    the thread and closes `source`."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in _grouped(source, group) if group else source:
                if not offer(work(item)):
                    return
            offer(_End())
        except BaseException as err:  # handed to the consumer, which raises it
            offer(_End(err))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="upscale-pipeline", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = queue.get(timeout=0.05)
            except Empty:
                if not thread.is_alive() and queue.empty():
                    raise RuntimeError("upscale pipeline thread ended without a result") from None
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _grouped(items: Iterator[T], size: int) -> Iterator[list[T]]:
    group: list[T] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# ---- loading --------------------------------------------------------------------------------------------------


def model_file(folder: str, name: str, param: str) -> Path:
    from spinbot.settings import get_settings

    root = Path(get_settings().models_dir)
    path = root / folder / name
    if not path.is_file():
        raise BackendUnavailable(f"upscale_video native: {param} file {name} not found: looked for {path} "
                                 f"(SPINBOT_MODELS_DIR={root})")
    return path


def load_models(params: AIUpscalerParams, device: torch.device, half: bool = True) -> Models:
    detector_name = DETECTOR_FILES.get(params.facedetection)
    if detector_name is None:
        raise ParamsError(f"facedetection {params.facedetection!r} is not available in the native backend; "
                          f"use one of: {', '.join(DETECTOR_FILES)}")
    upscaler_path = model_file("upscale_models", params.model_name_0, "model_name_0")
    restorer_path = model_file("facerestore_models", params.model_name_1, "model_name_1")
    detector_path = model_file("facedetection", detector_name, "facedetection")
    half = half and device.type == "cuda"  # CPU half-precision kernels are slow or missing
    upscaler, dtype = load_upscaler(upscaler_path, device, half)
    restorer, autocast = load_restorer(restorer_path, device, half)
    detector_dtype = torch.float16 if half else torch.float32
    detector = cached("retinaface", detector_path, device, detector_dtype,
                      lambda: load_retinaface(detector_path, device, detector_dtype))
    return Models(upscaler, restorer, autocast, RetinaFaceDetector(detector, RetinaFaceConfig()), dtype)


def load_upscaler(path: Path, device: torch.device, half: bool) -> tuple[Any, torch.dtype]:
    def load() -> tuple[Any, torch.dtype]:
        descriptor = load_spandrel(path, "model_name_0")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3 or descriptor.scale < 1:
            raise ParamsError(f"model_name_0 {path.name}: not an RGB upscaler ({descriptor.architecture.name})")
        dtype = torch.float32
        if half:  # float16 where the architecture allows it, else bfloat16
            dtype = (torch.float16 if descriptor.supports_half
                     else torch.bfloat16 if descriptor.supports_bfloat16 else dtype)
        descriptor = descriptor.to(device=device, dtype=dtype).eval()
        if device.type == "cuda":
            descriptor.model.to(memory_format=torch.channels_last)
        return descriptor, dtype

    # The precision follows from the file, so the cache key says "half where allowed" rather than a dtype.
    return cached("upscaler", path, device, "half-if-allowed" if half else torch.float32, load)


def load_restorer(path: Path, device: torch.device, half: bool) -> tuple[torch.nn.Module, torch.dtype | None]:
    def load() -> torch.nn.Module:
        descriptor = load_spandrel(path, "model_name_1")
        if descriptor.architecture.id != "CodeFormer":
            raise ParamsError(f"model_name_1 {path.name} is a {descriptor.architecture.name} model; the native "
                              "backend restores faces with CodeFormer")
        model = descriptor.model.to(device).eval()
        model.quantize.get_codebook_feat = MethodType(codebook_lookup, model.quantize)
        return model

    autocast = torch.bfloat16 if half else None
    return cached("restorer", path, device, torch.float32, load), autocast


def load_spandrel(path: Path, param: str) -> Any:
    spandrel = import_spandrel()
    try:
        return spandrel.ModelLoader("cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise ParamsError(f"{param} {path.name}: spandrel does not recognise this checkpoint's architecture"
                          ) from None


_spandrel_lock = threading.Lock()


def import_spandrel() -> Any:
    """spandrel with CodeFormer registered."""
    with _spandrel_lock:
        try:
            import spandrel
            import spandrel_extra_arches
        except ImportError as err:
            raise BackendUnavailable(
                f"upscale_video native needs the gpu extra (pip install 'spinbot[gpu]'): {err}") from None
        spandrel_extra_arches.install(ignore_duplicates=True)
        return spandrel


def codebook_lookup(quantizer: torch.nn.Module, indices: torch.Tensor, shape: list[int] | None) -> torch.Tensor:
    """CodeFormer's code lookup as a gather of codebook rows. The original builds a one-hot matrix on the CPU
    and copies it to the device on every forward (a stall of the calling thread, and 16 MB for 16 faces), to
    multiply it with the codebook: the same rows."""
    quantized = F.embedding(indices.reshape(-1), quantizer.embedding.weight)
    if shape is not None:
        quantized = quantized.view(shape).permute(0, 3, 1, 2).contiguous()
    return quantized


# ---- model cache ----------------------------------------------------------------------------------------------

_local_cache: dict[tuple[str, str], Any] = {}
_local_lock = threading.Lock()


def cached(role: str, path: Path, device: torch.device, dtype: torch.dtype | str, load: Callable[[], T]) -> T:
    """The worker's model cache when there is one (shared with the other backends, with a memory budget),
    else a process-wide dict. Keyed by file, role (one file loaded as two things is two entries), device and
    dtype. The file's size stands for the model's (its float32 weights: an upper bound for a half-precision
    copy)."""
    tag = f"{role}:{device}:{dtype}"
    try:
        from spinbot.worker.model_cache import get_model_cache
    except ImportError:
        key = (str(path.resolve()), tag)
        with _local_lock:
            if key not in _local_cache:
                _local_cache[key] = load()
            return _local_cache[key]
    return get_model_cache().get(path, tag, load, size=path.stat().st_size, on_evict=_release)


def _release(model: Any) -> None:
    model = model[0] if isinstance(model, tuple) else model
    module = getattr(model, "model", model)
    if isinstance(module, torch.nn.Module):
        module.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
