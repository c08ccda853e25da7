"""The CUDA fast path's torch.compile'd models, and the eager fallback when compiling fails.

Inductor fuses the element-wise work around the convolutions (RRDBNet: 28 -> 18 ms a frame; CodeFormer: 10 -> 4.6
ms a face). Compiling costs minutes on a fresh machine, once per frame size; a failed compile is logged once and the
model stays eager (it computes the same).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from spinbot.errors import first_line

T = TypeVar("T")
log = logging.getLogger(__name__)

_compiled_modules: dict[int, Any] = {}
_compile_lock = threading.Lock()


def compiled_module(module: torch.nn.Module) -> Any | None:
    """torch.compile'd once per loaded module (compilation is the expensive part: about a minute for each of
    the two models on the first batch; the on-disk Inductor cache shortens it in later processes). The batch
    dimension is dynamic from the start, so the last, shorter batch of a video does not compile again."""
    with _compile_lock:
        key = id(module)
        if key not in _compiled_modules:
            _compiled_modules[key] = (module, torch.compile(module))  # the pair keeps the id in use
        return _compiled_modules[key][1]


def pad_batch(x: torch.Tensor) -> torch.Tensor:
    """Mark the batch dimension dynamic, repeating the item of a batch of one (Dynamo would specialise a size
    of one into a graph of its own, compiled again)."""
    if len(x) == 1:
        x = torch.cat([x, x])
    torch._dynamo.mark_dynamic(x, 0)
    return x


def run_compiled_upscaler(compiled: Any, descriptor: Any, frames: torch.Tensor) -> torch.Tensor:
    """What spandrel's descriptor call does (pad to the model's size multiple, run, clamp, crop), around the
    compiled module."""
    count, height, width = len(frames), frames.shape[-2], frames.shape[-1]
    pad_w, pad_h = descriptor.size_requirements.get_padding(width, height)
    if pad_w or pad_h:  # as spandrel pads: reflected as far as the image allows, then repeated
        reflect_w, reflect_h = min(pad_w, width - 1), min(pad_h, height - 1)
        frames = F.pad(frames, (0, reflect_w, 0, reflect_h), mode="reflect")
        frames = F.pad(frames, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    out = compiled(pad_batch(frames))
    s = descriptor.scale
    return out[:count, :, : height * s, : width * s].clamp_(0, 1)


def with_eager_fallback(
    module: torch.nn.Module, role: str, compiled_call: Callable[[], T], eager_call: Callable[[], T]
) -> T:
    """Run the compiled `module`; if compiling fails, say so once and keep `module` eager from then on."""
    try:
        return compiled_call()
    except Exception as err:  # noqa: BLE001 - any compiler failure: the eager model computes the same
        with _compile_lock:
            _compiled_modules[id(module)] = (module, None)
        log.warning("torch.compile failed: the model runs eager", extra={"model": role, "error": first_line(err)})
        return eager_call()
