"""RetinaFace with a ResNet-50 backbone: face boxes, scores and five landmarks, batched on any torch device.

Loads the official checkpoint (`detection_Resnet50_Final.pth`, the Pytorch_Retinaface weights as facexlib ships
them) by its key names: the backbone is torchvision's ResNet-50 as `body.*` (up to layer4, no fc), then
`fpn.*`, `ssh1-3.*` and the `ClassHead` / `BboxHead` / `LandmarkHead` lists of 1x1 convolutions. The backbone and
the suppression (`torchvision.ops.nms`) are torchvision's; the neck and heads are written here because no library
ships them outside facexlib, which downloads its weights at run time.

The landmarks are, in order: left eye, right eye, nose tip, left and right mouth corner (as seen in the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinbot.errors import BackendUnavailable

try:
    from torchvision.models import resnet50
    from torchvision.models.feature_extraction import create_feature_extractor
    from torchvision.ops import nms
except ImportError:  # the native upscaler imports this module: say what to install, in one line
    raise BackendUnavailable("upscale_video native needs torchvision: pip install -e '.[gpu]'") from None


@dataclass(frozen=True)
class RetinaFaceConfig:
    # The ResNet-50 model's anchors: two square sizes per pyramid level, levels at strides 8, 16 and 32.
    min_sizes: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)
    # The network was trained on BGR pixels in 0-255 with these channel means subtracted.
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    # facexlib's face-restoration helper keeps detections above 0.97 and merges boxes that overlap by 0.4.
    confidence: float = 0.97
    nms_iou: float = 0.4
    # Candidates per frame handed to the (CPU) suppression step, best first.
    top_k: int = 200


@dataclass(frozen=True)
class Faces:
    """The faces of one frame, best score first: boxes (n, 4) as x0, y0, x1, y1; scores (n,); landmarks (n, 5, 2)
    as x, y. Pixel coordinates of the frame given to the detector."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _conv_bn(cin: int, cout: int, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:  # the ResNet-50 model's FPN and SSH use leaky slope 0 (their 256 channels are above 64)
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resnet50_body() -> nn.Module:
    """torchvision's ResNet-50 up to layer4, returning the outputs of layer2, layer3 and layer4 (strides 8, 16, 32)
    under the keys "0", "1", "2", its parameters under torchvision's names (conv1, bn1, layer1..layer4)."""
    return create_feature_extractor(resnet50(weights=None), {"layer2": "0", "layer3": "1", "layer4": "2"})


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], cout: int):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], cout, kernel=1)
        self.output2 = _conv_bn(in_channels[1], cout, kernel=1)
        self.output3 = _conv_bn(in_channels[2], cout, kernel=1)
        self.merge1 = _conv_bn(cout, cout)
        self.merge2 = _conv_bn(cout, cout)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out1, out2, out3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields (as stacked 3x3 convs)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, relu=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, relu=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, relu=False)  # sic: lower-case x in the checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), self.conv7x7_3(self.conv7X7_2(branch5))], 1)
        return F.relu(out)


class Head(nn.Module):
    """A 1x1 conv predicting `values` numbers for each of the anchors at every position."""

    def __init__(self, cin: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)  # (batch, positions x anchors, values)


class RetinaFace(nn.Module):
    def __init__(self, channels: int = 256, anchors: int = 2):
        super().__init__()
        self.body = resnet50_body()
        self.fpn = FPN((512, 1024, 2048), channels)
        self.ssh1, self.ssh2, self.ssh3 = SSH(channels, channels), SSH(channels, channels), SSH(channels, channels)
        self.ClassHead = nn.ModuleList(Head(channels, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(channels, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(channels, anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (batch, 3, H, W), BGR minus the means. Returns box offsets (b, A, 4), face probability (b, A) and
        landmark offsets (b, A, 10) for the A anchors of priors()."""
        levels = self.fpn(list(self.body(x).values()))
        feats = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, feats)], 1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, feats)], 1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, feats)], 1)
        return boxes, logits.float().softmax(-1)[..., 1], landmarks


@lru_cache(maxsize=8)
def priors(height: int, width: int, config: RetinaFaceConfig = RetinaFaceConfig()) -> torch.Tensor:
    """Anchor boxes (A, 4) as centre x, centre y, width, height in units of the image size, in the order the
    heads emit them: level, then row, then column, then anchor size."""
    out = []
    for step, sizes in zip(config.steps, config.min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid(
            (torch.arange(rows) + 0.5) * step / height, (torch.arange(cols) + 0.5) * step / width, indexing="ij"
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], -1) for s in sizes
        ]
        out.append(torch.stack(per_size, 2).reshape(-1, 4))
    return torch.cat(out)


def decode(
    offsets: torch.Tensor, landmark_offsets: torch.Tensor, anchors: torch.Tensor, variances: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD-style decoding to corner boxes (..., 4) and landmarks (..., 5, 2), in units of the image size."""
    centre = anchors[:, :2] + offsets[..., :2] * variances[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(offsets[..., 2:] * variances[1])
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1)
    points = landmark_offsets.reshape(*landmark_offsets.shape[:-1], 5, 2)
    landmarks = anchors[:, None, :2] + points * variances[0] * anchors[:, None, 2:]
    return boxes, landmarks


class PendingFaces:
    """Detections on their way to the CPU: the device work and the copy are queued; result() waits for them
    alone (not for work queued after them) and then suppresses overlapping boxes."""

    def __init__(
        self, boxes: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor, threshold: float, iou: float
    ):
        self._tensors = [_to_host(t) for t in (boxes, scores, landmarks)]
        self._ready = torch.cuda.Event() if boxes.is_cuda else None
        if self._ready is not None:
            self._ready.record()
        self._threshold, self._iou = threshold, iou

    def result(self) -> list[Faces]:
        if self._ready is not None:
            self._ready.synchronize()
        boxes, scores, landmarks = (t.numpy() for t in self._tensors)
        faces = []
        for frame_boxes, frame_scores, frame_points in zip(boxes, scores, landmarks):
            above = frame_scores > self._threshold  # strict, as facexlib: a threshold of 1 finds nothing
            kept = nms(torch.from_numpy(frame_boxes[above]), torch.from_numpy(frame_scores[above]), self._iou).numpy()
            faces.append(Faces(frame_boxes[above][kept], frame_scores[above][kept], frame_points[above][kept]))
        return faces


def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    if not tensor.is_cuda:
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


class RetinaFaceDetector:
    """The network plus pre- and post-processing: RGB frames in, Faces out."""

    def __init__(self, model: RetinaFace, config: RetinaFaceConfig = RetinaFaceConfig()):
        self.model = model
        self.config = config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._mean = torch.tensor(config.mean_bgr, device=self.device).view(1, 3, 1, 1).to(self.dtype)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def detect(self, frames: torch.Tensor, confidence: float | None = None) -> list[Faces]:
        """frames: (batch, 3, H, W) RGB in [0, 1] on the model's device. One Faces per frame."""
        return self.launch(frames, confidence).result()

    @torch.inference_mode()
    def launch(self, frames: torch.Tensor, confidence: float | None = None) -> PendingFaces:
        """Queue the detection of `frames` without waiting for it."""
        height, width = frames.shape[-2:]
        x = frames.flip(1).to(self.dtype) * 255 - self._mean  # RGB -> BGR, 0-255, minus the means
        x = x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x
        offsets, scores, landmark_offsets = self.model(x)
        boxes, landmarks = decode(
            offsets.float(), landmark_offsets.float(), self._anchors(height, width), self.config.variances
        )
        boxes[..., 0::2] *= width
        boxes[..., 1::2] *= height
        landmarks[..., 0] *= width
        landmarks[..., 1] *= height
        # The best top_k candidates per frame go to the CPU together: one transfer per batch.
        k = min(self.config.top_k, scores.shape[1])
        top, index = scores.topk(k, dim=1)
        boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        landmarks = landmarks.gather(1, index[..., None, None].expand(-1, -1, 5, 2))
        threshold = self.config.confidence if confidence is None else confidence
        return PendingFaces(boxes, top, landmarks, threshold, self.config.nms_iou)

    def _anchors(self, height: int, width: int) -> torch.Tensor:
        # Kept on the device: a copy from pageable memory would stall this thread until the device is idle.
        if (height, width) not in self._priors:
            self._priors[(height, width)] = priors(height, width, self.config).to(self.device)
        return self._priors[(height, width)]


def load_retinaface(path: Path, device: torch.device, dtype: torch.dtype) -> RetinaFace:
    """The network from an official checkpoint (with or without DataParallel's `module.` prefix)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = RetinaFace()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BackendUnavailable(
            f"{path} is not a RetinaFace-ResNet50 checkpoint ({len(missing)} keys missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    model = model.eval().to(device=device, dtype=dtype)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model
