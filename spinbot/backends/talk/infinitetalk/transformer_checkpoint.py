"""Load the InfiniteTalk transformer from safetensors files under the official key names.

The official pipeline merges the Wan2.1 I2V checkpoint (one or several shards) with the InfiniteTalk file (the
audio adapter: `audio_proj.*`, `blocks.N.audio_cross_attn.*`, `blocks.N.norm_x.*`) into one state dict, later files
overriding earlier ones; so does `load_model`. The keys are checked against the model from the files' headers
before any tensor is read, so a wrong file fails in a second with one line naming the key, not after minutes of
reading 28 GB. The model is built on the meta device and the tensors are assigned as read (cast one by one, on
the target device): no second copy of the weights in memory.

Each file may nest its keys under its own prefix (ComfyUI's repackagings use `model.diffusion_model.`, Kijai's
adapter files none). Weights stored in float8 are upcast as read; scaled-fp8 files (Kijai's `*_fp8_scaled`, ComfyUI's)
store `<module>.scale_weight` (or `.weight_scale`) beside each float8 `<module>.weight`, and a `scaled_fp8` marker:
the weight read is weight * scale, as WanVideoWrapper and ComfyUI dequantize it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.errors import BackendUnavailable
from spinbot.models.headers import not_safetensors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")  # scaled fp8: <module>.weight * <module>.scale_weight
MARKER_KEYS = ("scaled_fp8",)  # scaled-fp8 files' marker tensor, not a parameter


class CheckpointError(BackendUnavailable):
    """A checkpoint that does not fit the model: a missing, unexpected or misshapen key, or an unreadable file."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported InfiniteTalk dtype {dtype!r} (float32 or bfloat16)")


@dataclass(frozen=True)
class Entry:
    """Where one model key is read from: the file, its name there, its shape and dtype, and its fp8 scale's name."""

    path: Path
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: str | None = None


def load_model(
    paths: Iterable[str | Path],
    config: InfiniteTalkConfig,
    dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    prefix: str | Sequence[str] = "",
) -> InfiniteTalkModel:
    """The model with every parameter from `paths` (merged in order), in eval mode without gradients.

    `dtype` applies to the matmul weights; norms, modulations, the timestep MLPs and the head stay float32 (see
    InfiniteTalkModel.fp32_param_names). With `prefix` (one for all files, or one per file), only keys that start
    with it are read, prefix removed (files that hold other tensors beside the weights)."""
    files = [Path(p) for p in paths]
    dtype = resolve_dtype(dtype)
    with torch.device("meta"):
        model = InfiniteTalkModel(config)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    sources = index_checkpoints(files, prefix)
    check_keys(expected, sources, files)
    keep_fp32 = model.fp32_param_names()
    state = {}
    for path, keys in _by_file(sources).items():
        with _open(path, device) as f:
            for key in keys:
                state[key] = read_weight(f, sources[key]).to(torch.float32 if key in keep_fp32 else dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def read_weight(f, entry: Entry) -> torch.Tensor:
    """The tensor as the model needs it: float8 upcast, scaled fp8 multiplied by its scale (in float32)."""
    tensor = f.get_tensor(entry.name)
    if entry.scale is not None:
        return tensor.float() * f.get_tensor(entry.scale).float()
    return tensor.float() if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else tensor


def index_checkpoints(paths: list[Path], prefix: str | Sequence[str] = "") -> dict[str, Entry]:
    """key (prefix removed) -> its Entry, from the headers only; later files win. fp8 scales and the scaled-fp8
    marker are folded into the entries of the weights they scale, not indexed as keys."""
    prefixes = [prefix] * len(paths) if isinstance(prefix, str) else list(prefix)
    sources: dict[str, Entry] = {}
    for path, pre in zip(paths, prefixes):
        with _open(path, "cpu") as f:
            names = [k for k in f.keys() if k.startswith(pre) and k[len(pre) :] not in MARKER_KEYS]
            scales = {_scaled(k): k for k in names if k.endswith(SCALE_SUFFIXES)}
            for name in names:
                if name.endswith(SCALE_SUFFIXES):
                    continue
                view = f.get_slice(name)
                sources[name[len(pre) :]] = Entry(
                    path, name, tuple(view.get_shape()), view.get_dtype(), scales.get(name)
                )
    return sources


def _scaled(scale_key: str) -> str:
    """'blocks.0.ffn.0.scale_weight' -> 'blocks.0.ffn.0.weight', the key the scale applies to."""
    for suffix in SCALE_SUFFIXES:
        if scale_key.endswith(suffix):
            return scale_key[: -len(suffix)] + ".weight"
    return scale_key


def check_keys(expected: dict[str, tuple[int, ...]], sources: dict[str, Entry], paths: list[Path]) -> None:
    """One-line CheckpointError for the first missing, unexpected or misshapen key (and how many more there are)."""
    missing = sorted(set(expected) - set(sources))
    if missing:
        names = ", ".join(p.name for p in paths)
        raise CheckpointError(f"InfiniteTalk checkpoint is missing '{missing[0]}'{_more(missing)} (read {names})")
    unexpected = sorted(set(sources) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"InfiniteTalk checkpoint has an unexpected key '{unexpected[0]}'{_more(unexpected)} "
            f"(in {sources[unexpected[0]].path.name})"
        )
    wrong = sorted(k for k in expected if sources[k].shape != expected[k])
    if wrong:
        entry = sources[wrong[0]]
        raise CheckpointError(
            f"InfiniteTalk checkpoint key '{wrong[0]}' has shape {list(entry.shape)}, the model "
            f"needs {list(expected[wrong[0]])}{_more(wrong)} (in {entry.path.name})"
        )


def _more(keys: list[str]) -> str:
    return f" and {len(keys) - 1} more" if len(keys) > 1 else ""


def _by_file(sources: dict[str, Entry]) -> dict[Path, list[str]]:
    files: dict[Path, list[str]] = {}
    for key, entry in sources.items():
        files.setdefault(entry.path, []).append(key)
    return files


def _open(path: Path, device: str | torch.device):
    if not path.is_file():
        raise CheckpointError(f"InfiniteTalk checkpoint not found: {path}")
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"InfiniteTalk checkpoint {path.name} is {not_safetensors(path, err)}") from None
