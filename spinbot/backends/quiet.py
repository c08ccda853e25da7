"""Third-party noise the native backends' imports print, silenced where it starts and nowhere else: PyTorch's
FutureWarning for `@torch.jit.script` (x_transformers, which f5-tts uses, and spandrel_extra_arches' CodeFormer
decorate functions with it at import), and bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install
kernels" line (diffusers imports bitsandbytes for its quantizers; we quantize nothing with it), and pydub's
"Couldn't find ffmpeg or avconv" (f5-tts imports pydub; no code of ours calls it: ours is PyAV's FFmpeg). Our own
warnings, and every other warning of these packages, still show."""

from __future__ import annotations

import logging
import warnings

JIT_SCRIPT_DEPRECATED = r"`torch\.jit\.script` is deprecated"
BITSANDBYTES_CPU_OPS = "bitsandbytes.backends.cpu.ops"  # the logger that says "Failed to load CPU gemm_4bit_forward"


PYDUB_NO_FFMPEG = "Couldn't find ffmpeg or avconv"  # pydub (f5-tts imports it) looks for ffmpeg on PATH at import


def quiet_third_party_imports() -> None:
    warnings.filterwarnings("ignore", message=PYDUB_NO_FFMPEG, category=RuntimeWarning, module=r"pydub\.")
    warnings.filterwarnings("ignore", message=JIT_SCRIPT_DEPRECATED, category=FutureWarning, module=r"torch\.jit\.")
    logging.getLogger(BITSANDBYTES_CPU_OPS).setLevel(logging.ERROR)
