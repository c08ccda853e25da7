"""What a native render carries from one window to the next, as bytes: a resumed render continues exactly.

A window depends on the windows before it through two things only (pipeline.py): its motion context, the VAE
latents of the last `motion_frame` frames before it (kept as latents: 1 + (M - 1) // 4 latent frames, about 6 MB at
720p, where the frames themselves would be some 280 MB in float32), and the CPU generator its noise is drawn from.
The per-window timings ride along for the node's metadata. The bytes are a `torch.save` of plain tensors, read back
with `weights_only=True`: nothing from storage is unpickled.
"""

from __future__ import annotations

import io

import torch

from spinbot.backends.talk.infinitetalk.pipeline import MASK_CHANNELS, TalkState
from spinbot.backends.talk.infinitetalk.vae import TEMPORAL_STRIDE


def save(state: TalkState) -> bytes:
    """The continuation after the window just rendered; encodes the next window's motion latents now (kept in the
    state, so that window does not encode them again)."""
    tensors = {
        "generator": state.generator.get_state(),
        "window_seconds": torch.tensor(state.window_seconds, dtype=torch.float64),
        "step_seconds": torch.tensor(state.step_seconds, dtype=torch.float64),
    }
    if state.motion is not None:
        if state.motion_latent is None:
            with torch.inference_mode():
                state.motion_latent = state.models.vae.encode(state.motion)
        tensors["motion_latent"] = state.motion_latent.detach().to("cpu", copy=True)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def restore(state: TalkState, data: bytes) -> None:
    """Continue from save()'s bytes on a state fresh from prepare(); ValueError, the state untouched, otherwise."""
    try:
        tensors = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - RuntimeError, pickle errors, EOFError...: all "unreadable" here
        raise ValueError(f"not a native checkpoint: {err}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError("not a native checkpoint: expected a dict of tensors")
    generator = tensors.get("generator")
    if generator is None or generator.dtype != torch.uint8 or generator.shape != state.generator.get_state().shape:
        raise ValueError("the checkpoint's generator state does not fit this generator")
    latent = tensors.get("motion_latent")
    if latent is not None:
        y = state.y
        expected = (1, y.shape[1] - MASK_CHANNELS, 1 + (state.settings.motion - 1) // TEMPORAL_STRIDE, *y.shape[-2:])
        if tuple(latent.shape) != expected or not latent.is_floating_point():
            raise ValueError(f"the checkpoint's motion latents are {tuple(latent.shape)}, expected {expected}")
    state.generator.set_state(generator)
    state.motion_latent = None if latent is None else latent.to(state.y.device)
    state.window_seconds = [float(t) for t in tensors.get("window_seconds", torch.zeros(0)).tolist()]
    state.step_seconds = [float(t) for t in tensors.get("step_seconds", torch.zeros(0)).tolist()]
