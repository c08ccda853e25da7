"""Native upscale_video backend: Real-ESRGAN / ESRGAN upscaling and CodeFormer face restoration, on the GPU.

Models, from SPINBOT_MODELS_DIR as docs/models.md lays it out:
- `model_name_0` in `upscale_models/`: an upscaler checkpoint that spandrel recognises (RealESRGAN_x2plus with its
  pixel-unshuffle input, RealESRGAN_x4plus, old-arch ESRGAN, ...). The upscale factor is the model's own.
- `model_name_1` in `facerestore_models/`: CodeFormer (spandrel_extra_arches).
- `facedetection`: `retinaface_resnet50`, from `facedetection/detection_Resnet50_Final.pth` (retinaface.py).
Loading and the model cache are in model_loading.py.

Each batch of frames, on the device:
1. faces are found in the input frames (RetinaFace; a frame whose shorter side is over 640 px is shrunk first, as
   CodeFormer's own inference does);
2. the frames are upscaled, in sub-batches bounded by pixel count, and in tiles when a frame is too large
   (tiling.py);
3. each face is aligned to CodeFormer's 512x512 crop: a least-squares similarity transform from its five
   landmarks (scaled to the upscaled frame) to the standard FFHQ template, sampled from the upscaled frame
   (the geometry is in face_alignment.py);
4. CodeFormer restores the crops with w = `codeformer_fidelity`;
5. each restored face goes back through the inverse transform and is blended in with a feathered mask, over its
   own bounding region only.
On CUDA the upscaler and the detector run in float16 and CodeFormer under bfloat16 autocast (its spandrel
descriptor rules out float16, and its codebook lookup mixes dtypes, which autocast reconciles); float32 on CPU.

The task drives the protocol methods batch by batch, which is correct but serial (8.6 fps at 832x480 -> 1664x960
on an H100). `stream()` is the fast path (34.5 fps there, benchmarks/results/upscale_gpu.json):
- decoding, the device work and the caller's encoding run in three threads joined by bounded queues
  (prefetch.py);
- the device thread never waits for the device except for the detections, which it queues before the upscale
  so that the device upscales while the CPU places the faces (small uploads go through pinned memory: a copy
  from pageable memory would wait for everything queued before it);
- both models are torch.compile'd (config.compile): Inductor fuses the element-wise work around the
  convolutions (RRDBNet: 28 -> 18 ms a frame; CodeFormer: 10 -> 4.6 ms a face). Compiling costs about three
  minutes on the first batch of a fresh machine (the Inductor cache on disk makes it about 30 s in later
  processes), once per frame size; a failed compile falls back to eager (compiled_models.py).
Leave torch.backends.cudnn.benchmark off: PyTorch keeps cuDNN's tuned plans per thread, so the device thread
(a new one for each video) would tune again each time (measured: 9.9 fps instead of 24.2, eager).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from spinbot.errors import BackendUnavailable

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the registry imports this module by name: say what to install, in one line
    raise BackendUnavailable("upscale_video native needs PyTorch: pip install -e '.[gpu]'") from None

from spinbot.backends.upscale.base import UpscaleBackend
from spinbot.backends.upscale.compiled_models import (
    compiled_module,
    pad_batch,
    run_compiled_upscaler,
    with_eager_fallback,
)
from spinbot.backends.upscale.face_alignment import (
    BOX_LANDMARKS,
    FFHQ_TEMPLATE_512,
    crop_theta,
    face_groups,
    feathered_square,
    paste_region,
    paste_theta,
    similarity,
    upscaled_points,
)
from spinbot.backends.upscale.model_loading import Models, load_models
from spinbot.backends.upscale.prefetch import prefetch
from spinbot.backends.upscale.retinaface import Faces, PendingFaces
from spinbot.backends.upscale.tiling import upscale_in_tiles
from spinbot.media.faces import Box

if TYPE_CHECKING:
    from spinbot.tasks.upscale import AIUpscalerParams

T = TypeVar("T")


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


class NativeUpscaler(UpscaleBackend):
    name = "native"
    honoured = frozenset(
        {"model_name_0", "model_name_1", "facedetection", "batch_size", "codeformer_fidelity", "frame_load_cap"}
    )
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
            self._remember(
                Box(box.x * self.scale, box.y * self.scale, box.w * self.scale, box.h * self.scale),
                upscaled_points(points, self.scale),
            )
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

    def stream(
        self, frames: Iterable[np.ndarray], fidelity: float, batch_size: int | None = None
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Each frame upscaled with its faces restored, in order, with the number of faces restored in it.

        Three threads: one pulls frames from `frames` (decoding) and packs batches of `batch_size` (the task's;
        None: the params' at load), one runs them on the device, and the caller's, which consumes this iterator
        (encoding). The queues between them hold `queue_depth` batches, so memory stays bounded by the batch size,
        not the video's length.
        """
        depth = self.config.queue_depth
        batches = prefetch(iter(frames), depth, self._pack, group=batch_size or self.batch_size)
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
        transforms = [
            (i, similarity(upscaled_points(points, self.scale), self._template()))
            for i, found in enumerate(faces)
            for points in found.landmarks
        ]
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
            return torch.cat(
                [
                    upscale_in_tiles(
                        self._run_upscaler, frame[None], self.scale, self.config.tile, self.config.tile_overlap
                    )
                    for frame in frames
                ]
            )
        per_forward = max(1, self.config.batch_pixels // (height * width))
        return torch.cat([self._run_upscaler(chunk, fast) for chunk in frames.split(per_forward)])

    def _run_upscaler(self, frames: torch.Tensor, fast: bool = False) -> torch.Tensor:
        if self.device.type == "cuda":
            frames = frames.contiguous(memory_format=torch.channels_last)
        compiled = self._compiled("upscaler") if fast else None
        if compiled is None:
            return self._models.upscaler(frames)
        descriptor = self._models.upscaler
        return self._with_fallback(
            "upscaler", lambda: run_compiled_upscaler(compiled, descriptor, frames), lambda: descriptor(frames)
        )

    def _restore(
        self, frames: torch.Tensor, transforms: list[tuple[int, np.ndarray]], fidelity: float, fast: bool = False
    ) -> None:
        """Restore the faces at `transforms` (frame index, 2x3 frame-to-crop matrix) in `frames`, in place."""
        if not transforms:
            return
        size = self.config.face_size
        height, width = frames.shape[-2:]
        regions = [paste_region(matrix, size, (height, width)) for _, matrix in transforms]
        crop_thetas = [crop_theta(matrix, (height, width), size) for _, matrix in transforms]
        paste_thetas = [
            paste_theta(matrix, region, size) if region else np.eye(3)[:2]
            for (_, matrix), region in zip(transforms, regions)
        ]
        thetas = self._upload(np.stack(crop_thetas + paste_thetas))
        crop_at, paste_at = thetas[: len(transforms)], thetas[len(transforms) :]
        for part in face_groups([index for index, _ in transforms], self.config.faces_per_forward):
            crops = self._crop(frames, [transforms[i][0] for i in part], crop_at[part.start : part.stop])
            step = self.config.faces_per_forward
            restored = torch.cat([self._run_restorer(chunk, fidelity, fast) for chunk in crops.split(step)])
            for i, face in zip(part, restored):
                region = regions[i]
                if region is not None:
                    self._paste(frames[transforms[i][0]], face, paste_at[i], region)

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
            out = self._with_fallback(
                "restorer",
                lambda: self._call_restorer(compiled, pad_batch(x), fidelity),
                lambda: self._call_restorer(self._models.restorer, x, fidelity),
            )
        return ((out[: len(crops)].float() + 1) / 2).clamp_(0, 1)

    def _call_restorer(self, model: Any, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        autocast = self._models.restorer_autocast
        if autocast is None:
            return model(x, weight=fidelity)[0]
        with torch.autocast(self.device.type, dtype=autocast):
            return model(x, weight=fidelity)[0]

    def _paste(
        self, frame: torch.Tensor, face: torch.Tensor, theta: torch.Tensor, region: tuple[int, int, int, int]
    ) -> None:
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
        return compiled_module(self._module(role))

    def _with_fallback(self, role: str, compiled_call: Callable[[], T], eager_call: Callable[[], T]) -> T:
        return with_eager_fallback(self._module(role), role, compiled_call, eager_call)

    def _module(self, role: str) -> torch.nn.Module:
        return self._models.upscaler.model if role == "upscaler" else self._models.restorer

    def _feather_mask(self) -> torch.Tensor:
        if self._mask is None:
            self._mask = feathered_square(self.config.face_size, self.config.mask_margin, self.config.mask_feather).to(
                self.device
            )[None]
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


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """(b, 3, h, w) in [0, 1] -> (b, h, w, 3) uint8, on the same device."""
    out = frames.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out.permute(0, 2, 3, 1).contiguous()
