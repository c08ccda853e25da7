"""The DiT's transformer blocks on the real frames only: a batch of chunks packed back to back, one attention call.

CFM.sample hands the DiT a padded batch ([rows, frames, dim], rows = chunks x 2 under classifier-free guidance) and
a prefix mask. Everything in a DiT block but attention works frame by frame, and under CFM.sample every row shares
one time step (so one time embedding modulates them all). So the blocks can run on the real frames alone, packed
into one sequence of `total` frames, with attention kept inside each row by variable-length attention (CUDA:
a FlashAttention varlen kernel with the offsets on the GPU, one graph per block under torch.compile: torch's own
FlashAttention 2 (`aten._flash_attention_forward`) or FlashAttention 4 (the flash-attn-4 package, Hopper and
Blackwell kernels); CPU: one SDPA call per row). Padding costs nothing, and no mask is built, expanded or read.
The input and text embeddings stay the package's, on the padded batch (the position convolution through one Triton
kernel on CUDA: layers.use_fused_conv_position);
the output goes back to the padded layout with zeros on the padding (CFM.sample never reads those frames into a real
one: its attention and convolutions are masked).

On an H100, the 30 s benchmark's attention alone (8 rows of 1,355-1,884 frames, 16 heads of 64): 0.30 ms a block
packed with FlashAttention 4, 0.36 ms with FlashAttention 2, against 0.42 ms for one cuDNN SDPA call per row and
0.52 ms for one call with a padding bias (benchmarks/results/f5tts_kernels_gpu.json).

The rows' lengths come from the backend, which planned them (known_lengths): reading them from the mask would stall
the GPU until the host catches up. Without a plan, or with a per-row time, the package's own forward runs (with its
processor's mask switched on, so that a padded batch is still right: only slower).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from spinbot.backends.tts.f5.layers import feed_forward, fuse_projections, project_qkv, rotate, use_fused_conv_position


@dataclass(frozen=True)
class PackedLayout:
    """Where each row's real frames sit in the packed sequence, planned on the host for one CFM.sample call."""

    frames: int  # the padded length of the batch: the longest row's real frames
    bounds: list[int]  # [rows + 1] where each row starts in the packed sequence, on the host
    index: torch.Tensor  # [total] row * frames + position: the packed frames in the flattened padded batch
    offsets: torch.Tensor  # bounds as an int32 tensor on the model's device (the kernels' cu_seqlens)
    rope: tuple[torch.Tensor, torch.Tensor]  # [total, 1, rotary dim] float32 cos and sin of each frame's angles

    @classmethod
    def plan(cls, lengths: list[int], rotary: Any, device: torch.device) -> PackedLayout:
        frames = max(lengths)
        bounds = [0, *itertools.accumulate(lengths)]
        index = torch.cat([torch.arange(length) + row * frames for row, length in enumerate(lengths)])
        positions = torch.cat([torch.arange(length) for length in lengths])
        freqs, _ = rotary(positions.to(device))  # by each frame's position within its row; once per sample() call
        rope = (freqs[0, :, None].cos(), freqs[0, :, None].sin())
        return cls(frames, bounds, index.to(device), torch.tensor(bounds, dtype=torch.int32, device=device), rope)


class PackedDiT:
    """Installed as a DiT's forward (use_packing); the same arguments and output as DiT.forward."""

    def __init__(self, dit: Any, compile: bool, kernel: str = "rows"):
        self.dit = dit
        self.kernel = kernel  # flash2 | flash4 | rows (attention_kernel)
        self.package_forward = dit.forward
        self.layouts: dict[int, PackedLayout] = {}  # by rows, for the CFM.sample call under way (known_lengths)
        # dynamic=True: every job has other lengths, which must not compile again (one graph serves all blocks)
        self.block = torch.compile(packed_block, dynamic=True) if compile else packed_block

    def __call__(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        time: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop_audio_cond: bool = False,
        drop_text: bool = False,
        cfg_infer: bool = False,
        cache: bool = False,
    ) -> torch.Tensor:
        dit, rows = self.dit, x.shape[0] * (2 if cfg_infer else 1)
        layout = self.layouts.get(rows)
        if layout is None or layout.frames != x.shape[1] or time.ndim != 0 or dit.long_skip_connection is not None:
            return self.package_forward(
                x=x,
                cond=cond,
                text=text,
                time=time,
                mask=mask,
                drop_audio_cond=drop_audio_cond,
                drop_text=drop_text,
                cfg_infer=cfg_infer,
                cache=cache,
            )
        t = dit.time_embed(time.reshape(1))  # [1, dim]: one time step for every row
        drops = [(False, False), (True, True)] if cfg_infer else [(drop_audio_cond, drop_text)]
        padded = torch.cat(
            [
                dit.get_input_embed(x, cond, text, drop_audio_cond=audio, drop_text=txt, cache=cache, audio_mask=mask)
                for audio, txt in drops
            ]
        )
        h = padded.flatten(0, 1).index_select(0, layout.index)[None]  # [1, total, dim]
        # the row loop takes the bounds on the host; the compiled kernels' graphs take only tensors and ints
        bounds = layout.bounds if self.kernel == "rows" else None
        for block in dit.transformer_blocks:
            h = self.block(block, h, t, layout.rope, layout.offsets, layout.frames, bounds, self.kernel)
        out = dit.proj_out(dit.norm_out(h, t))[0]  # [total, mel]
        full = out.new_zeros(rows * layout.frames, out.shape[-1]).index_copy_(0, layout.index, out)
        return full.view(rows, layout.frames, -1)


def packed_block(
    block: Any,
    x: torch.Tensor,
    t: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    offsets: torch.Tensor,
    longest: int,
    bounds: list[int] | None,
    kernel: str,
) -> torch.Tensor:
    """DiTBlock.forward on [1, total, dim] packed frames (same modules, same order)."""
    norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.attn_norm(x, emb=t)
    x = x + gate_msa.unsqueeze(1) * packed_attention(block.attn, norm, rope, offsets, longest, bounds, kernel)
    norm = block.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return x + gate_mlp.unsqueeze(1) * feed_forward(block.ff, norm[0])[None]


def packed_attention(
    attn: Any,
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    offsets: torch.Tensor,
    longest: int,
    bounds: list[int] | None,
    kernel: str,
) -> torch.Tensor:
    """The package's AttnProcessor (projections, q/k norms, rotary embedding on the first pe_attn_head heads,
    output projection) with each row attending over its own frames."""
    q, k, v = project_qkv(attn, x[0])
    if attn.q_norm is not None:
        q = attn.q_norm(q)
    if attn.k_norm is not None:
        k = attn.k_norm(k)
    rotated = getattr(attn.processor, "pe_attn_head", None) or attn.heads
    q, k = (torch.cat([rotate(part[:, :rotated], *rope), part[:, rotated:]], dim=1) for part in (q, k))
    out = varlen_attention(q, k, v, offsets, longest, bounds, kernel)
    return attn.to_out[1](attn.to_out[0](out.flatten(1).to(q.dtype)))[None]


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    longest: int,
    bounds: list[int] | None,
    kernel: str,
) -> torch.Tensor:
    """Attention of [total, heads, head_dim] packed rows, each row over its own frames: a FlashAttention varlen
    kernel, or (rows: where there is none; bounds are the offsets on the host) one SDPA call per row."""
    if kernel == "flash4":
        return torch.ops.spinbot.flash4_varlen(q, k, v, offsets, longest)
    if kernel == "flash2":
        return torch.ops.aten._flash_attention_forward(q, k, v, offsets, offsets, longest, longest, 0.0, False, False)[
            0
        ]
    assert bounds is not None, "the rows kernel needs the offsets on the host"
    parts = []
    for start, end in itertools.pairwise(bounds):
        q_rows, k_rows, v_rows = (t[start:end].transpose(0, 1) for t in (q, k, v))
        parts.append(F.scaled_dot_product_attention(q_rows, k_rows, v_rows).transpose(0, 1))
    return torch.cat(parts)


@torch.library.custom_op("spinbot::flash4_varlen", mutates_args=())
def flash4_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int
) -> torch.Tensor:
    """FlashAttention 4's varlen forward as one opaque op (its CuTe DSL launcher is Python that torch.compile must
    not trace; it compiles each kernel once per shape class and caches it)."""
    from flash_attn.cute.interface import flash_attn_varlen_func

    out = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=offsets, cu_seqlens_k=offsets, max_seqlen_q=longest, max_seqlen_k=longest
    )
    return out[0] if isinstance(out, tuple) else out


@flash4_varlen.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int) -> torch.Tensor:
    return torch.empty_like(q)


def attention_kernel(choice: str, device: torch.device, dtype: torch.dtype) -> str:
    """The packed attention's kernel for the settings' tts_attention: flash4 (flash-attn-4 installed, a Hopper or
    Blackwell GPU; auto takes it there), flash2 (torch's FlashAttention: 16-bit inputs on Ampere or newer), or rows
    (one SDPA call per row: the CPU, older GPUs, float32). Asking for flash4 where it cannot run is an error naming
    what is missing."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return "rows"
    major = torch.cuda.get_device_capability(device)[0]
    if major < 8:
        return "rows"
    if choice == "flash2":
        return "flash2"
    try:
        import flash_attn.cute.interface  # noqa: F401

        missing = None if major in (9, 10) else f"a Hopper or Blackwell GPU (this one is sm{major}x)"
    except ImportError as err:
        missing = f"the flash-attn-4 package (pip install 'spinbot[fa4]'; {err})"
    if missing is None:
        return "flash4"
    if choice == "flash4":
        from spinbot.errors import BackendUnavailable

        raise BackendUnavailable(f"f5_to_tts native: SPINBOT_TTS_ATTENTION=flash4 needs {missing}")
    return "flash2"


def use_packing(dit: Any, compile: bool, kernel: str = "rows") -> PackedDiT:
    """Give the DiT the packed forward. The package's processors get their mask switched on for the unplanned
    fallback (attn_mask_enabled is off in the v1 configs: a padded batch would attend to its padding)."""
    use_fused_conv_position(dit.input_embed.conv_pos_embed)
    for block in dit.transformer_blocks:
        fuse_projections(block.attn)
        if hasattr(block.attn.processor, "attn_mask_enabled"):
            block.attn.processor.attn_mask_enabled = True
    packed = PackedDiT(dit, compile, kernel)
    dit.forward = packed
    return packed


@contextmanager
def known_lengths(dit: Any, lengths: list[int]) -> Iterator[None]:
    """Each sample's real frames for one CFM.sample call (its lens_to_mask(duration) prefix). Two layouts: the
    samples' rows, and the rows doubled as DiT.forward(cfg_infer=True) doubles them (conditional, unconditional)."""
    packed = dit.forward if isinstance(dit.forward, PackedDiT) else None
    if packed is None:
        yield
        return
    device = dit.proj_out.weight.device
    packed.layouts = {
        len(rows): PackedLayout.plan(rows, dit.rotary_embed, device) for rows in (list(lengths), list(lengths) * 2)
    }
    try:
        yield
    finally:
        packed.layouts = {}
