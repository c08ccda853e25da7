"""Random-weight checkpoints in the released layouts of upscale_video's files, for the models-folder writer, the
native upscale backend's CPU tests, GPU test and GPU benchmark: RealESRGAN_x2.pth (RRDBNet with its 2x2
pixel-unshuffle input, under `params_ema`), codeformer.pth (CodeFormer under `params_ema`),
detection_Resnet50_Final.pth (RetinaFace-ResNet50 with DataParallel's `module.` prefix), float32 torch.save files.
(See tests/unit/test_upscale_native.py's docstring for how each file is laid out and how faces are planted.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spinbot.backends.upscale.model_loading import import_spandrel


def _conv(generator: torch.Generator, cout: int, cin: int, k: int, gain: float = 1.0) -> torch.Tensor:
    """He-normal weights (times `gain`): activations keep their scale through a deep random network."""
    return torch.randn(cout, cin, k, k, generator=generator) * (gain * (2.0 / (cin * k * k)) ** 0.5)


def realesrgan_state_dict(
    scale: int = 2, num_feat: int = 64, num_block: int = 23, num_grow: int = 32, seed: int = 0
) -> dict[str, dict[str, torch.Tensor]]:
    """RealESRGAN_x{2,4}plus.pth's layout: RRDBNet (basicsr) under params_ema; x2 takes a 2x2 pixel-unshuffled
    input (12 channels). Residual blocks get basicsr's 0.1 init scale."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, gain: float = 1.0) -> None:
        state[f"{name}.weight"] = _conv(g, cout, cin, 3, gain)
        state[f"{name}.bias"] = torch.zeros(cout)

    conv("conv_first", num_feat, 3 * (4 if scale == 2 else 1))
    for block in range(num_block):
        for rdb in (1, 2, 3):
            for k in range(1, 6):
                cout = num_feat if k == 5 else num_grow
                conv(f"body.{block}.rdb{rdb}.conv{k}", cout, num_feat + (k - 1) * num_grow, gain=0.1)
    conv("conv_body", num_feat, num_feat)
    conv("conv_up1", num_feat, num_feat)
    conv("conv_up2", num_feat, num_feat)
    conv("conv_hr", num_feat, num_feat)
    conv("conv_last", 3, num_feat)
    return {"params_ema": state}


def codeformer_state_dict(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """codeformer.pth's layout: the CodeFormer network (dim 512, 9 transformer layers, 1024 codes, fusion at 32-256
    px) under params_ema, random weights."""
    import_spandrel()  # registers CodeFormer with spandrel
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    return {"params_ema": CodeFormer().state_dict()}


def _bn(state: dict, name: str, channels: int, g: torch.Generator) -> None:
    state[f"{name}.weight"] = 1 + 0.1 * torch.randn(channels, generator=g)
    state[f"{name}.bias"] = 0.1 * torch.randn(channels, generator=g)
    state[f"{name}.running_mean"] = 0.1 * torch.randn(channels, generator=g)
    state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(channels, generator=g)
    state[f"{name}.num_batches_tracked"] = torch.tensor(0)


def _resnet50_body(state: dict, g: torch.Generator) -> None:
    """torchvision's resnet50 names under `body.` (IntermediateLayerGetter keeps conv1..layer4, drops fc)."""
    state["body.conv1.weight"] = _conv(g, 64, 3, 7)
    _bn(state, "body.bn1", 64, g)
    cin = 64
    for layer, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for block in range(blocks):
            name = f"body.layer{layer}.{block}"
            state[f"{name}.conv1.weight"] = _conv(g, width, cin, 1)
            _bn(state, f"{name}.bn1", width, g)
            state[f"{name}.conv2.weight"] = _conv(g, width, width, 3)
            _bn(state, f"{name}.bn2", width, g)
            state[f"{name}.conv3.weight"] = _conv(g, width * 4, width, 1, gain=0.2)
            _bn(state, f"{name}.bn3", width * 4, g)
            if block == 0:
                state[f"{name}.downsample.0.weight"] = _conv(g, width * 4, cin, 1)
                _bn(state, f"{name}.downsample.1", width * 4, g)
            cin = width * 4


def _retinaface_neck(state: dict, g: torch.Generator) -> None:
    def conv_bn(name: str, cout: int, cin: int, k: int) -> None:
        state[f"{name}.0.weight"] = _conv(g, cout, cin, k)
        _bn(state, f"{name}.1", cout, g)

    for i, cin in enumerate((512, 1024, 2048), start=1):
        conv_bn(f"fpn.output{i}", 256, cin, 1)
    conv_bn("fpn.merge1", 256, 256, 3)
    conv_bn("fpn.merge2", 256, 256, 3)
    for i in (1, 2, 3):
        conv_bn(f"ssh{i}.conv3X3", 128, 256, 3)
        conv_bn(f"ssh{i}.conv5X5_1", 64, 256, 3)
        conv_bn(f"ssh{i}.conv5X5_2", 64, 64, 3)
        conv_bn(f"ssh{i}.conv7X7_2", 64, 64, 3)
        conv_bn(f"ssh{i}.conv7x7_3", 64, 64, 3)


# Landmark offsets from the anchor's centre in units of its size, for the `face` heads: a frontal face.
FACE_LAYOUT = np.array([[-0.17, -0.10], [0.17, -0.10], [0.0, 0.06], [-0.13, 0.22], [0.13, 0.22]])


def _retinaface_heads(state: dict, g: torch.Generator, face: tuple[int, int] | None) -> None:
    """Random 1x1 heads; or, for `face` = (level, anchor), zero weights with biases that make that anchor size a
    face (logits -4 / +4 -> score 0.9997, the other anchors 0.0003), its box the anchor and its landmarks
    FACE_LAYOUT (decoded as centre + offset * 0.1 * size)."""
    for name, values in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for level in range(3):
            weight = _conv(g, 2 * values, 256, 1, gain=0.1)
            bias = 0.1 * torch.randn(2 * values, generator=g)
            if face is not None:
                weight, bias = torch.zeros_like(weight), torch.zeros(2 * values)
                if name == "ClassHead":
                    bias = torch.tensor([4.0, -4.0] * 2)
                    if level == face[0]:
                        bias[2 * face[1] : 2 * face[1] + 2] = torch.tensor([-4.0, 4.0])
                if name == "LandmarkHead":
                    bias = torch.from_numpy(FACE_LAYOUT.reshape(-1) / 0.1).float().repeat(2)
            state[f"{name}.{level}.conv1x1.weight"] = weight
            state[f"{name}.{level}.conv1x1.bias"] = bias


def retinaface_state_dict(face: tuple[int, int] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """detection_Resnet50_Final.pth's layout, with DataParallel's `module.` prefix as the released file has."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _resnet50_body(state, g)
    _retinaface_neck(state, g)
    _retinaface_heads(state, g, face)
    return {f"module.{key}": value for key, value in state.items()}


def write_models(
    root: Path,
    num_feat: int = 16,
    num_block: int = 2,
    face: tuple[int, int] | None = None,
    upscaler_name: str = "RealESRGAN_x2.pth",
) -> Path:
    """A SPINBOT_MODELS_DIR with the three checkpoints under their default names."""
    for folder in ("upscale_models", "facerestore_models", "facedetection"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    upscaler = realesrgan_state_dict(num_feat=num_feat, num_block=num_block)
    torch.save(upscaler, root / "upscale_models" / upscaler_name)
    torch.save(codeformer_state_dict(), root / "facerestore_models" / "codeformer.pth")
    torch.save(retinaface_state_dict(face), root / "facedetection" / "detection_Resnet50_Final.pth")
    return root


def write_upscale(paths: dict[str, Path], tiny: bool, seed: int) -> None:
    """The models folder's three files (param -> path); tiny: a 2-block, 16-feature RRDBNet (CodeFormer and
    RetinaFace have one size)."""
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    feat, blocks = (16, 2) if tiny else (64, 23)
    torch.save(realesrgan_state_dict(scale=2, num_feat=feat, num_block=blocks, seed=seed), paths["model_name_0"])
    torch.save(codeformer_state_dict(seed=seed), paths["model_name_1"])
    torch.save(retinaface_state_dict(seed=seed), paths["facedetection"])
