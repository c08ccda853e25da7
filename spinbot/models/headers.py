"""A checkpoint's tensor names, shapes and dtypes, read without reading its tensors.

safetensors: the JSON header (safe_open; the data is never touched). .pth/.pt/.bin: torch.load with weights_only
(no code runs) and mmap (tensors are mapped, not read), so a 1 GB file answers in milliseconds. Files written in
torch's legacy (pre-1.6, non-zip) format cannot be mapped; those are read whole, which for the seed's only legacy
candidates (the 100 MB face detector) costs a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinbot.errors import first_line

SAFETENSORS_DTYPES = {  # torch dtype name -> safetensors' name
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})
FP8_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})


class UnreadableCheckpoint(Exception):
    """The file is not a checkpoint of its format (a truncated download, an HTML error page, another format)."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # safetensors' dtype names: F32, F16, BF16, F8_E4M3, I64, ...


Header = dict[str, TensorSpec]

HTML_PAGE = (
    "an HTML page, not a model file: a download of a web page's link instead of the file's (on the Hub, /resolve/ "
    "rather than /blob/)"
)
# What users put under a checkpoint's name instead of the checkpoint, by the file's first bytes
OTHER_FORMATS = (
    (
        b"GGUF",
        "a GGUF file (a quantized model for ComfyUI-GGUF or llama.cpp), which the native backends do not read: "
        "use the safetensors file (bf16, fp16 or fp8)",
    ),
    (
        b"version https://git-lfs",
        "a Git LFS pointer, not the file: the repository was cloned without LFS "
        "(`git lfs pull`, or `spinbot models pull`)",
    ),
    (b"<!doctype html", HTML_PAGE),
    (b"<html", HTML_PAGE),
    (b"PK\x03\x04", "a PyTorch (zip) checkpoint, not a safetensors file"),
)


def other_format(path: Path) -> str | None:
    """What the file is instead of a safetensors checkpoint, where its first bytes say so (a GGUF model, a Git LFS
    pointer, an HTML page, an empty file, a torch zip), else None. Reads 64 bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if not head:
        return "an empty file (a download that never started?)"
    lowered = head.lstrip().lower()
    return next((what for magic, what in OTHER_FORMATS if lowered.startswith(magic.lower())), None) or _cut_short(path)


def _cut_short(path: Path) -> str | None:
    """'cut short: ...' for a safetensors file shorter than its own header says (a download that stopped)."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(size, 100_000_000):
                return None
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, TypeError, KeyError, IndexError):
        return None
    needed = 8 + length + int(end)
    if size >= needed:
        return None
    return f"cut short: {size:,} bytes of the {needed:,} its header describes (an interrupted download?)"


def not_safetensors(path: Path, err: BaseException) -> str:
    """The reason a safetensors file does not open: what it is instead where that is known, else the error."""
    return f"not a readable safetensors file: {other_format(path) or _first_line(err)}"


def read_header(path: Path) -> Header:
    """Tensor specs of a flat checkpoint (safetensors, or a .pth whose top level is the state dict)."""
    tree = read_tree(path)
    return {k: v for k, v in tree.items() if isinstance(v, TensorSpec)}


def read_tree(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level mapping, tensors as TensorSpec (nested dicts kept: `params_ema`, ...)."""
    if path.suffix == ".safetensors":
        return _safetensors_header(path)
    return _torch_tree(path)


def _safetensors_header(path: Path) -> Header:
    from safetensors import safe_open

    try:
        # numpy, not pt: torch maps the whole file copy-on-write, which the kernel refuses (ENOMEM) for a file larger
        # than the memory it may commit, e.g. the 32 GB 14B checkpoint on a 24 GB machine; the header needs none of it
        with safe_open(str(path), framework="numpy") as f:
            return {k: TensorSpec(tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise UnreadableCheckpoint(not_safetensors(path, err)) from None


def _torch_tree(path: Path) -> dict[str, Any]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err) and "zip" not in str(err):
            raise UnreadableCheckpoint(f"not a readable torch checkpoint: {_first_line(err)}") from None
        loaded = _legacy_load(path)
    except Exception as err:  # noqa: BLE001 - pickle errors, truncated archives, refused globals
        raise UnreadableCheckpoint(f"not a readable torch checkpoint: {_first_line(err)}") from None
    if not isinstance(loaded, dict):
        raise UnreadableCheckpoint(f"holds a {type(loaded).__name__}, not a mapping of tensors")
    return _specs(loaded)


def _legacy_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - as above: torch.load fails in many ways
        raise UnreadableCheckpoint(f"not a readable torch checkpoint: {_first_line(err)}") from None


def _specs(tree: dict) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            out[str(key)] = TensorSpec(tuple(value.shape), torch_dtype_name(value.dtype))
        elif isinstance(value, dict):
            out[str(key)] = _specs(value)
        else:
            out[str(key)] = value
    return out


def torch_dtype_name(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    return SAFETENSORS_DTYPES.get(name, name.upper())


def torch_dtype(name: str) -> Any:
    import torch

    by_name = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    return getattr(torch, by_name.get(name, "float32"))


def as_meta(header: Header) -> dict[str, Any]:
    """Meta tensors with the header's shapes and dtypes: what the loaders' own renaming functions and the
    architectures' load code can run on without any data."""
    import torch

    return {k: torch.empty(v.shape, dtype=torch_dtype(v.dtype), device="meta") for k, v in header.items()}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, (KeyError, IndexError, EOFError)) and text:  # their text alone is a bare key or index
        return f"{type(err).__name__}: {first_line(err)}"
    return first_line(err)
