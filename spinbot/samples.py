"""Demo inputs that come from packages on PyPI: a real portrait and a real speech sample with its transcript."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The words spoken in moonshine_onnx/assets/beckett.wav (16 kHz mono, 9.96 s).
BECKETT_TRANSCRIPT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
DEMO_PROMPT = "why failing is part of learning anything new"


def portrait_path(folder: Path) -> Path:
    """scikit-image's astronaut photo (a file inside the skimage wheel), written as PNG."""
    import cv2
    from skimage import data

    path = Path(folder) / "astronaut.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def voice_path() -> Path:
    """The Beckett speech sample that useful-moonshine-onnx ships."""
    return Path(str(resources.files("moonshine_onnx") / "assets" / "beckett.wav"))
