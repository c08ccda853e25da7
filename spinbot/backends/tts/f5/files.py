"""Where the native F5-TTS backend finds its files in SPINBOT_MODELS_DIR, by name only (no torch): the loader
(loading.py) and `spinbot models list` (spinbot/models/needs.py) read the same names."""

from __future__ import annotations

import re
from pathlib import Path

FOLDER = "F5-TTS"
VOCODER = "vocos-mel-24khz"


def latest_checkpoint(folder: Path) -> Path | None:
    """model_<step>.safetensors or .pt with the highest step (safetensors first on a tie), or None."""
    found = [p for p in folder.glob("model_*") if p.suffix in (".safetensors", ".pt") and p.is_file()]
    if not found:
        return None

    def rank(p: Path) -> tuple[int, int]:
        step = re.fullmatch(r"model_(\d+)", p.stem)
        return (int(step.group(1)) if step else -1, p.suffix == ".safetensors")

    return max(found, key=rank)
