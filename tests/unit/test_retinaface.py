"""RetinaFace on torchvision's ResNet-50 and `torchvision.ops.nms` finds what the hand-written body and NMS found.

`tests/support/retinaface_detections.npz` holds the detections of the hand-written detector this module replaced
(main at 8453cee), recorded on tests/support's random-weight checkpoint in the official layout, with the class
head's weights and biases scaled by 0.05 so that the scores spread over 0.1-0.75 instead of sitting at 1.0 (equal
scores would leave the order of suppression to chance), on three 160x128 textured frames, confidence 0.62: about
90 faces a frame, a few suppressed. Each recorded face must come back, and no other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import in_ci

if any(importlib.util.find_spec(name) is None for name in ("torch", "torchvision")):
    message = "the gpu extra (torch, torchvision) is not installed: pip install -e '.[gpu]'"
    pytest.fail(message, pytrace=False) if in_ci() else pytest.skip(message, allow_module_level=True)

import torch

from spinbot.backends.upscale.retinaface import RetinaFace, RetinaFaceDetector, load_retinaface
from spinbot.models.synth.upscale import retinaface_state_dict
from tests.unit.test_upscale_native import frame_with_texture

RECORDED = Path(__file__).parents[1] / "support" / "retinaface_detections.npz"
CLASS_HEAD_GAIN, CONFIDENCE = 0.05, 0.62


def test_the_official_layout_loads_key_for_key():
    """The checkpoint's names (written out in tests/support from torchvision's ResNet-50 and the official heads,
    not from this module) are exactly the model's."""
    official = {key.removeprefix("module.") for key in retinaface_state_dict()}
    assert official == set(RetinaFace().state_dict())


def test_detections_are_those_of_the_hand_written_detector(tmp_path):
    state = retinaface_state_dict()
    state = {key: value * CLASS_HEAD_GAIN if ".ClassHead." in key else value for key, value in state.items()}
    torch.save(state, tmp_path / "detection_Resnet50_Final.pth")
    detector = RetinaFaceDetector(
        load_retinaface(tmp_path / "detection_Resnet50_Final.pth", torch.device("cpu"), torch.float32)
    )
    frames = np.stack([frame_with_texture(seed, width=160, height=128) for seed in range(3)])
    found = detector.detect(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, CONFIDENCE)
    recorded = np.load(RECORDED)
    assert len(found) == len(frames)  # one list of faces a frame, each compared below
    for index, faces in enumerate(found):
        boxes, scores = recorded[f"boxes_{index}"], recorded[f"scores_{index}"]
        landmarks = recorded[f"landmarks_{index}"]
        assert len(faces) == len(boxes) > 50
        # Matched by box (scores a few 1e-6 apart may swap places on another CPU's kernels).
        match = np.abs(faces.boxes[:, None] - boxes[None]).max(axis=2).argmin(axis=1)
        assert sorted(match.tolist()) == list(range(len(boxes)))
        np.testing.assert_allclose(faces.boxes, boxes[match], atol=1e-3)
        np.testing.assert_allclose(faces.scores, scores[match], atol=1e-5)
        np.testing.assert_allclose(faces.landmarks, landmarks[match], atol=1e-3)
