"""upscale_video's files with random weights in the released layouts (tests/support/upscale_checkpoints.py builds
them): RealESRGAN_x2.pth (RRDBNet with its 2x2 pixel-unshuffle input, under `params_ema`), codeformer.pth
(CodeFormer under `params_ema`), detection_Resnet50_Final.pth (RetinaFace-ResNet50 with DataParallel's `module.`
prefix), all float32 torch.save files. Tiny: a 2-block, 16-feature RRDBNet; CodeFormer and RetinaFace have one size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.upscale_checkpoints import codeformer_state_dict, realesrgan_state_dict, retinaface_state_dict


def write_upscale(paths: dict[str, Path], tiny: bool, seed: int) -> None:
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    feat, blocks = (16, 2) if tiny else (64, 23)
    torch.save(realesrgan_state_dict(scale=2, num_feat=feat, num_block=blocks, seed=seed), paths["model_name_0"])
    torch.save(codeformer_state_dict(seed=seed), paths["model_name_1"])
    torch.save(retinaface_state_dict(seed=seed), paths["facedetection"])
