"""Which file the native upscaler loads for each face detector (in facedetection/ of SPINBOT_MODELS_DIR), by name
only (no torch): model_loading.py and `spinbot models list` (spinbot/models/needs.py) read the same names."""

from __future__ import annotations

DETECTOR_FILES = {"retinaface_resnet50": "detection_Resnet50_Final.pth"}
