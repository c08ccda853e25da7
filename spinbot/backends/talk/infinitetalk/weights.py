"""Reading the encoders' and the VAE's safetensors files, with one-line errors that name the file and the key.

The transformer has its own loader (transformer_checkpoint.py, meta-device build, header-first checks); these
models are small enough (the largest, UMT5-XXL's encoder, is 11 GB in bfloat16) to be read whole and then checked
against the module before `load_state_dict`, which would otherwise report every problem at once in a multi-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.models.headers import not_safetensors


@contextmanager
def uninitialised(dtype: torch.dtype) -> Iterator[None]:
    """Modules built inside get their parameters in `dtype` and skip random initialisation: every parameter is
    overwritten from the file next, and UMT5-XXL's 5.7 B parameters would spend minutes in it (and twice the
    memory, built in float32 first). Buffers computed in __init__ (position ids) are still computed.
    transformers' no_init_weights patches torch.nn.init for the process while it is active."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU in its stored dtype."""
    if not path.is_file():
        raise CheckpointError(f"{what} checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{what} checkpoint {path.name} is {not_safetensors(path, err)}") from None


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop the first of `prefixes` that every key carries (ComfyUI and transformers files nest their weights
    under a model name); unchanged when none fits all keys."""
    for prefix in prefixes:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_checked(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    what: str,
    path: Path,
    file_name: Callable[[str], str] = lambda key: key,
) -> None:
    """Load `state` into `module` after checking it: the first missing or misshapen key is a one-line
    CheckpointError naming it as the file names it (`file_name` maps a module key back when the file's names were
    converted). Keys the module does not have are ignored: these files often carry parts not used here (CLIP's
    projection head, a text tower)."""
    expected = module.state_dict()
    missing = sorted(file_name(k) for k in expected if k not in state)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{what} checkpoint {path.name} is missing '{missing[0]}'{more}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{what} checkpoint {path.name}: '{file_name(key)}' has shape "
                f"{list(state[key].shape)}, the model needs {list(tensor.shape)}"
            )
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
