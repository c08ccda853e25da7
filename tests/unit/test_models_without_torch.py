"""`spinbot models list` on the CPU install (`make demo`: no gpu extra): a user learns which files to download
before installing the GPU stack. Run in a subprocess where importing torch (or any other package of the gpu extra
that the layouts use) fails, as it does there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import spinbot

# The gpu extra's packages that the native backends and their layouts import (pull's huggingface_hub and httpx
# aside: `list` needs neither).
GPU_PACKAGES = (
    "torch",
    "torchvision",
    "torchaudio",
    "f5_tts",
    "vocos",
    "safetensors",
    "spandrel",
    "spandrel_extra_arches",
    "diffusers",
    "transformers",
)
BLOCKER = """
import os
import sys

BLOCKED = os.environ["BLOCKED_PACKAGES"].split(",")


class NoGpuExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoGpuExtra())
"""
TASKS = ["--task", "f5_to_tts", "--task", "infinite_talk", "--task", "upscale_video"]
DEFAULTS = [  # every default file of the three native backends
    "F5-TTS/F5TTS_v1_Base/model_1250000.safetensors",
    "F5-TTS/F5TTS_v1_Base/vocab.txt",
    "F5-TTS/F5TTS_v1_Base/config.yaml",
    "F5-TTS/vocos-mel-24khz/config.yaml",
    "F5-TTS/vocos-mel-24khz/pytorch_model.bin",
    "diffusion_models/wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors",
    "diffusion_models/wanvideo/infinite_talk/Wan2_1-InfiniTetalk-Single_fp16.safetensors",
    "loras/wanvideo/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
    "vae/wanvideo/Wan2_1_VAE_bf16.safetensors",
    "text_encoders/umt5/umt5-xxl-enc-bf16.safetensors",
    "text_encoders/umt5/tokenizer.json",
    "clip_vision/wanvideo/clip_vision_h.safetensors",
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/config.json",
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/pytorch_model.bin",
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/preprocessor_config.json",
    "upscale_models/RealESRGAN_x2.pth",
    "facerestore_models/codeformer.pth",
    "facedetection/detection_Resnet50_Final.pth",
]


def spinbot_without_gpu_extra(
    tmp_path: Path, *args: str, blocked: tuple[str, ...] = GPU_PACKAGES
) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    repo = Path(spinbot.__file__).parent.parent
    path = os.pathsep.join([str(blocker), str(repo)])
    env = {**os.environ, "PYTHONPATH": path, "BLOCKED_PACKAGES": ",".join(blocked)}
    return subprocess.run(
        [sys.executable, "-m", "spinbot.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_models_list_names_every_default_file_without_torch(tmp_path, spinbot_env):
    models = tmp_path / "models"
    result = spinbot_without_gpu_extra(tmp_path, "models", "list", *TASKS, "--models-dir", str(models))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"models folder: {models} (--models-dir; no such folder yet: `spinbot models pull` makes it)"
    assert [next(p for p in DEFAULTS if f"  {p}  " in line) for line in lines[1:-1]] == DEFAULTS
    assert "missing              32.8 GB  diffusion_models/wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors" in lines[6]
    assert lines[-1] == "18 files, 16 missing; `spinbot models pull` fetches them"


def test_models_check_without_torch_says_it_needs_the_gpu_extra_in_one_line(tmp_path, spinbot_env):
    result = spinbot_without_gpu_extra(tmp_path, "models", "check", *TASKS, "--models-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the native backends' model files need the gpu extra (pip install -e '.[gpu]'): No module named 'torch'"
    ]


def test_models_pull_without_its_downloaders_is_one_line_before_any_download(tmp_path, spinbot_env):
    models = tmp_path / "models"
    blocked = (*GPU_PACKAGES, "httpx", "huggingface_hub")
    result = spinbot_without_gpu_extra(
        tmp_path, "models", "pull", "--task", "upscale_video", "--models-dir", str(models), blocked=blocked
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the native backends' model files need the gpu extra (pip install -e '.[gpu]'): No module named 'httpx'"
    ]
    assert not models.exists()
