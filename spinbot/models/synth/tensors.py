"""Random tensors named like real checkpoints' and written tensor by tensor, so host memory stays at one tensor.

The safetensors writer is hand-written because the safetensors package only saves a dict of tensors held in memory
(a 33 GB file would need 33 GB of RAM): it writes the same format (8-byte header length, JSON header, the tensors'
bytes in header order, in the library's order: larger dtypes first, then by name), producing each tensor only when
its turn comes, on the given device.

Values: weights ~ N(0, 1/fan_in) so activations keep their scale through deep random networks, norm scales 1,
biases and modulations small; deterministic per (seed, tensor name).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

ST_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.float8_e4m3fn: "F8_E4M3",
}


@dataclass(frozen=True)
class Entry:
    name: str  # as the file names it
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str = "auto"  # auto (by name), ones, zeros, arange (position ids), or a float constant as a string


def entries(layout: dict[str, tuple[int, ...]], dtype_of) -> list[Entry]:
    """Entries for a {name: shape} layout, each with the dtype `dtype_of(name, shape)` gives."""
    return [Entry(name, tuple(shape), dtype_of(name, tuple(shape))) for name, shape in layout.items()]


def make(entry: Entry, seed: int, device: torch.device) -> torch.Tensor:
    """The tensor for one entry, on `device`, in the entry's dtype."""
    shape, name = entry.shape, entry.name.lower()
    if not entry.dtype.is_floating_point:
        values = (
            torch.arange(shape[-1], device=device).expand(shape)
            if entry.kind == "arange"
            else torch.zeros(shape, device=device)
        )
        return values.to(entry.dtype)
    kind = entry.kind if entry.kind != "auto" else _kind(name, shape)
    if kind == "ones":
        return torch.ones(shape, device=device, dtype=entry.dtype)
    if kind == "zeros":
        return torch.zeros(shape, device=device, dtype=entry.dtype)
    if kind not in ("normal", "small"):
        return torch.full(shape, float(kind), device=device, dtype=entry.dtype)
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(entry.name.encode()))
    std = 0.02 if kind == "small" else (1.0 / max(1, _fan_in(shape))) ** 0.5
    return (torch.randn(shape, generator=generator, device=device) * std).to(entry.dtype)


def _kind(name: str, shape: tuple[int, ...]) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("gamma", "running_var") or (len(shape) == 1 and leaf == "weight"):  # 1-D weights: norm scales
        return "ones"
    if leaf in ("running_mean", "beta"):
        return "zeros"
    if len(shape) <= 1 or "modulation" in name or leaf in ("diff_m", "diff_b", "diff", "bias"):
        return "small"
    return "normal"


def _fan_in(shape: tuple[int, ...]) -> int:
    fan = 1
    for size in shape[1:]:
        fan *= size
    return fan


def write_safetensors(
    path: Path,
    items: Iterable[Entry],
    seed: int = 0,
    device: str | torch.device = "cpu",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a safetensors file tensor by tensor (see the module docstring); the file appears under its name only
    when complete."""
    device = torch.device(device)
    ordered, blob = plan(items, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for e in ordered:
            f.write(_bytes(make(e, seed, device)))
    os.replace(tmp, path)
    return path


def plan(items: Iterable[Entry], metadata: dict[str, str] | None = None) -> tuple[list[Entry], bytes]:
    """The tensors in file order and the padded JSON header."""
    ordered = sorted(items, key=lambda e: (-_itemsize(e.dtype), e.name))
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for e in ordered:
        nbytes = _numel(e.shape) * _itemsize(e.dtype)
        header[e.name] = {"dtype": ST_NAMES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    return ordered, blob + b" " * (-len(blob) % 8)


def planned_size(items: Iterable[Entry], metadata: dict[str, str] | None = None) -> int:
    """The byte size write_safetensors would give these entries, without producing any tensor."""
    ordered, blob = plan(items, metadata)
    return 8 + len(blob) + sum(_numel(e.shape) * _itemsize(e.dtype) for e in ordered)


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1).cpu()
    return flat.view(torch.uint8).numpy().data


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
