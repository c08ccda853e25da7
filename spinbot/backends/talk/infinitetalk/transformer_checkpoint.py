"""Load the InfiniteTalk transformer from safetensors files under the official key names.

The official pipeline merges the Wan2.1 I2V checkpoint (one or several shards) with the InfiniteTalk file (the
audio adapter: `audio_proj.*`, `blocks.N.audio_cross_attn.*`, `blocks.N.norm_x.*`) into one state dict, later files
overriding earlier ones; so does `load_model`. The keys are checked against the model from the files' headers
before any tensor is read, so a wrong file fails in a second with one line naming the key, not after minutes of
reading 28 GB. The model is built on the meta device and the tensors are assigned as read (cast one by one, on
the target device): no second copy of the weights in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open

from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.errors import BackendUnavailable

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class CheckpointError(BackendUnavailable):
    """A checkpoint that does not fit the model: a missing, unexpected or misshapen key, or an unreadable file."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported InfiniteTalk dtype {dtype!r} (float32 or bfloat16)")


def load_model(paths: Iterable[str | Path], config: InfiniteTalkConfig, dtype: str | torch.dtype = torch.float32,
               device: str | torch.device = "cpu", prefix: str = "") -> InfiniteTalkModel:
    """The model with every parameter from `paths` (merged in order), in eval mode without gradients.

    `dtype` applies to the matmul weights; norms, modulations, the timestep MLPs and the head stay float32 (see
    InfiniteTalkModel.fp32_param_names). With `prefix`, only keys that start with it are read, prefix removed
    (files that hold other tensors beside the weights)."""
    paths = [Path(p) for p in paths]
    dtype = resolve_dtype(dtype)
    with torch.device("meta"):
        model = InfiniteTalkModel(config)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    sources = index_checkpoints(paths, prefix)
    check_keys(expected, sources, paths)
    keep_fp32 = model.fp32_param_names()
    state = {}
    for path, keys in _by_file(sources).items():
        with _open(path, device) as f:
            for key in keys:
                state[key] = f.get_tensor(prefix + key).to(torch.float32 if key in keep_fp32 else dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def index_checkpoints(paths: list[Path], prefix: str = "") -> dict[str, tuple[Path, tuple[int, ...]]]:
    """key (prefix removed) -> (the file it is read from, its shape), from the headers only; later files win."""
    sources: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for path in paths:
        with _open(path, "cpu") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    sources[key[len(prefix):]] = (path, tuple(f.get_slice(key).get_shape()))
    return sources


def check_keys(expected: dict[str, tuple[int, ...]], sources: dict[str, tuple[Path, tuple[int, ...]]],
               paths: list[Path]) -> None:
    """One-line CheckpointError for the first missing, unexpected or misshapen key (and how many more there are)."""
    missing = sorted(set(expected) - set(sources))
    if missing:
        names = ", ".join(p.name for p in paths)
        raise CheckpointError(f"InfiniteTalk checkpoint is missing '{missing[0]}'{_more(missing)} (read {names})")
    unexpected = sorted(set(sources) - set(expected))
    if unexpected:
        raise CheckpointError(f"InfiniteTalk checkpoint has an unexpected key '{unexpected[0]}'{_more(unexpected)} "
                              f"(in {sources[unexpected[0]][0].name})")
    wrong = sorted(k for k in expected if sources[k][1] != expected[k])
    if wrong:
        path, shape = sources[wrong[0]]
        raise CheckpointError(f"InfiniteTalk checkpoint key '{wrong[0]}' has shape {list(shape)}, the model needs "
                              f"{list(expected[wrong[0]])}{_more(wrong)} (in {path.name})")


def _more(keys: list[str]) -> str:
    return f" and {len(keys) - 1} more" if len(keys) > 1 else ""


def _by_file(sources: dict[str, tuple[Path, tuple[int, ...]]]) -> dict[Path, list[str]]:
    files: dict[Path, list[str]] = {}
    for key, (path, _) in sources.items():
        files.setdefault(path, []).append(key)
    return files


def _open(path: Path, device: str | torch.device):
    if not path.is_file():
        raise CheckpointError(f"InfiniteTalk checkpoint not found: {path}")
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"InfiniteTalk checkpoint {path.name} is not a readable safetensors file: "
                              f"{str(err).splitlines()[0]}") from None
