"""Merge a LoRA into the transformer's weights at load (the lightx2v I2V step/CFG distillation LoRA, `lora_model`).

File format (ComfyUI's LoRA format, as Kijai's `lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors`
and the official InfiniteTalk `wan_lora.py` read it): keys `diffusion_model.<module>.<kind>` where <module> is an
official Wan name (`blocks.0.self_attn.q`, `blocks.0.ffn.0`, `head.head`, ...) and <kind> is
- `lora_down.weight` + `lora_up.weight` (or `lora_A.weight` + `lora_B.weight`), optional `alpha`:
  W += (up @ down) * (alpha / rank) * strength, rank = down's first dimension (alpha absent: alpha = rank);
- `diff`: W += strength * diff (a full-weight difference, e.g. norms), `diff_b`: bias += strength * diff_b,
  `diff_m`: the module's `modulation` parameter += strength * diff_m (blocks.N.diff_m -> blocks.N.modulation).
The official InfiniteTalk loader ignores `alpha`; ComfyUI applies it, as here (lightx2v's files store alpha = rank,
so both agree on them). A key that targets no parameter of the model, or an unknown kind, is an error naming it:
a LoRA for another architecture must not be half-applied.

The sum is formed in float32 and cast once to the parameter's dtype (bfloat16 on the GPU), so the merge adds one
rounding, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.backends.talk.infinitetalk.weights import read_safetensors

PREFIXES = ("diffusion_model.", "model.diffusion_model.")
LOW_RANK = {
    "lora_down.weight": "down",
    "lora_up.weight": "up",
    "lora_A.weight": "down",
    "lora_B.weight": "up",
    "alpha": "alpha",
}
DIFFS = {"diff": "weight", "diff_b": "bias", "diff_m": "modulation"}


@dataclass(frozen=True)
class LoraReport:
    file: str
    strength: float
    tensors: int  # model parameters changed


@dataclass
class LowRank:
    key: str  # the first of its keys in the file, to name it in errors
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def merge_lora(model: nn.Module, path: Path, strength: float = 1.0) -> LoraReport:
    """Add the LoRA in `path`, scaled by `strength`, to `model`'s parameters in place."""
    params = dict(model.named_parameters())
    low_rank, diffs = parse(read_safetensors(path, "LoRA"), path)
    updates: list[tuple[str, str, LowRank | torch.Tensor]] = [
        (f"{module}.weight", parts.key, parts) for module, parts in low_rank.items()
    ]
    updates += [(target, key, diff) for target, (key, diff) in diffs.items()]
    for target, key, _ in updates:  # all checked before any weight changes
        if target not in params:
            raise CheckpointError(f"LoRA {path.name}: '{key}' targets '{target}', which the model does not have")
    with torch.no_grad():
        for target, key, update in updates:
            delta = low_rank_delta(update) if isinstance(update, LowRank) else update.float()
            _add(params[target], delta, strength, key, path)
    return LoraReport(path.name, strength, len(updates))


def parse(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, LowRank], dict[str, tuple[str, torch.Tensor]]]:
    """-> {module: LowRank} and {target parameter: (LoRA key, difference)}, prefixes removed."""
    low_rank: dict[str, LowRank] = {}
    diffs: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = next((key[len(p) :] for p in PREFIXES if key.startswith(p)), key)
        module, kind = split_key(name)
        if kind in LOW_RANK:
            parts = low_rank.setdefault(module, LowRank(key))
            if LOW_RANK[kind] == "alpha":
                parts.alpha = float(value)
            else:
                setattr(parts, LOW_RANK[kind], value)
        elif kind in DIFFS:
            diffs[f"{module}.{DIFFS[kind]}"] = (key, value)
        else:
            raise CheckpointError(
                f"LoRA {path.name}: '{key}' is not a LoRA key this loader knows "
                f"(lora_down/lora_up/alpha, diff, diff_b, diff_m)"
            )
    for module, parts in low_rank.items():
        if parts.down is None or parts.up is None:
            half = "lora_up" if parts.up is None else "lora_down"
            raise CheckpointError(f"LoRA {path.name} is missing '{module}.{half}.weight'")
    return low_rank, diffs


def low_rank_delta(parts: LowRank) -> torch.Tensor:
    """(up @ down) * (alpha / rank) in float32; conv weights through their flattened matrices."""
    assert parts.down is not None and parts.up is not None, "parse() checked both halves"
    rank = parts.down.shape[0]
    scale = 1.0 if parts.alpha is None else parts.alpha / rank
    return (parts.up.float().flatten(1) @ parts.down.float().flatten(1)) * scale


def _add(param: nn.Parameter, delta: torch.Tensor, strength: float, name: str, path: Path) -> None:
    if delta.numel() != param.numel():
        raise CheckpointError(
            f"LoRA {path.name}: '{name}' gives {list(delta.shape)}, the model's parameter is {list(param.shape)}"
        )
    # W + delta * strength, in float32
    merged = param.float() + delta.to(param.device).reshape(param.shape) * strength
    param.copy_(merged.to(param.dtype))


def split_key(name: str) -> tuple[str, str]:
    """'blocks.0.self_attn.q.lora_down.weight' -> ('blocks.0.self_attn.q', 'lora_down.weight')."""
    for kind in (*LOW_RANK, *DIFFS):
        if name.endswith("." + kind):
            return name[: -len(kind) - 1], kind
    return name, ""
