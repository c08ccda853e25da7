"""Sequence parallelism for the InfiniteTalk transformer: one forward over the ranks of a torch.distributed group,
each rank holding a contiguous slice of the video tokens (DeepSpeed-Ulysses, as the official code does through
xDiT/yunchang; docs/sequence_parallel.md compares the options).

model.py stays the single-device function; this module wraps it:
- the tokens split at the patch embedding: rank r keeps tokens [r*n, (r+1)*n) with n = ceil(L / world); the last
  ranks' slices are padded with zero tokens up to n (at 480p, 32760 tokens, and 720p, 75600, nothing is padded for
  2, 4 or 8 ranks). Padding never reaches a real token: it is cut out before the self-attention and gets no audio;
  every other layer works token by token.
- the self-attention kernel (SelfAttention.attend) becomes UlyssesAttention: q, k, v go from sequence-split to
  head-split by one all-to-all, each rank attends over the whole sequence for num_heads / world heads with the
  model's own kernel (SDPA, or the 8-bit ones), and the output goes back by a second all-to-all. Heads must divide
  by the world size (40 heads: 2, 4, 5, 8 ranks); anything else is refused, not worked around.
- RoPE uses each token's global position: the rope tables are sliced per rank.
- the text/image cross-attention needs nothing: every rank holds the whole context.
- the audio cross-attention groups tokens by latent frame; a rank's slice may start or end inside a frame, so
  its forward runs once per run of tokens within the same frames (at most three calls) with those frames' audio.
- the output head runs on the local tokens; one all_gather makes the full prediction on every rank.

Hand-written (about 60 lines) because torch offers no Ulysses attention (its context_parallel is ring attention
over SDPA only), xfuser pulls diffusers, transformers, accelerate, peft and av, and yunchang (torch alone, flash-attn
optional) picks its kernel from a fixed list and needs an even split: neither takes our 8-bit kernels or pads.
gloo (torch 2.14) implements all_to_all_single, so the same exchange runs in the CPU tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F

from spinbot.backends.talk.infinitetalk.model import (
    Attention,
    AudioCrossAttention,
    Conditions,
    InfiniteTalkModel,
    run_fp32,
    sinusoidal_embedding,
)

Group = dist.ProcessGroup | None  # None: the default group


@dataclass(frozen=True)
class Shard:
    """Which tokens a rank holds: [start, stop) of the `tokens` real ones, padded to `per_rank`."""

    rank: int
    world: int
    tokens: int

    @property
    def per_rank(self) -> int:
        return math.ceil(self.tokens / self.world)

    @property
    def start(self) -> int:
        return min(self.rank * self.per_rank, self.tokens)

    @property
    def stop(self) -> int:
        return min(self.start + self.per_rank, self.tokens)

    @property
    def padding(self) -> int:
        return self.per_rank - (self.stop - self.start)


def shard_of(tokens: int, group: Group = None) -> Shard:
    return Shard(dist.get_rank(group), dist.get_world_size(group), tokens)


def check_heads(num_heads: int, world: int) -> None:
    """Ulysses hands each rank num_heads / world whole heads."""
    if num_heads % world:
        raise ValueError(
            f"sequence parallelism needs the {num_heads} attention heads to divide by the world size; {world} ranks "
            "do not (use a divisor of the head count)"
        )


# ---- the exchange -----------------------------------------------------------------------------------------------


def all_to_all(chunks: torch.Tensor, group: Group) -> torch.Tensor:
    """[world, ...] chunk i to rank i; returns [world, ...] with chunk j from rank j. all_to_all_single on NCCL and
    on gloo alike (torch 2.14's gloo implements it); one contiguous buffer each way."""
    chunks = chunks.contiguous()
    out = torch.empty_like(chunks)  # of the contiguous tensor: empty_like keeps a permuted tensor's strides
    dist.all_to_all_single(out, chunks, group=group)
    return out


def seq_to_heads(x: torch.Tensor, world: int, group: Group) -> torch.Tensor:
    """[B, n, H, d] (this rank's tokens, all heads) -> [B, world*n, H/world, d] (all tokens, this rank's heads)."""
    if world == 1:
        return x  # one rank: nothing to exchange (and no copies: the one-rank path costs what today's does)
    b, n, h, d = x.shape
    chunks = x.reshape(b, n, world, h // world, d).permute(2, 0, 1, 3, 4)  # by destination rank's heads
    return all_to_all(chunks, group).permute(1, 0, 2, 3, 4).reshape(b, world * n, h // world, d)


def heads_to_seq(x: torch.Tensor, world: int, group: Group) -> torch.Tensor:
    """The inverse: [B, world*n, H/world, d] -> [B, n, H, d]."""
    if world == 1:
        return x
    b, length, h, d = x.shape
    chunks = x.reshape(b, world, length // world, h, d).permute(1, 0, 2, 3, 4)  # by destination rank's tokens
    return all_to_all(chunks, group).permute(1, 2, 0, 3, 4).reshape(b, length // world, world * h, d)


class UlyssesAttention:
    """The self-attention kernel over a sequence split across ranks, around the model's own kernel."""

    def __init__(self, inner: Attention, shard: Shard, group: Group):
        self.inner, self.shard, self.group = inner, shard, group
        self.__name__ = f"ulysses({getattr(inner, '__name__', type(inner).__name__)}, {shard.world})"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        world, real = self.shard.world, self.shard.tokens
        # the padding sits at the end of the gathered sequence: cut it so it is no key, and no query to compute
        q, k, v = (seq_to_heads(t, world, self.group)[:, :real] for t in (q, k, v))
        out = self.inner(q, k, v)
        padding = world * self.shard.per_rank - real
        if padding:
            out = F.pad(out, (0, 0, 0, 0, 0, padding))
        return heads_to_seq(out, world, self.group)


# ---- the audio cross-attention by frame runs --------------------------------------------------------------------


def frame_runs(shard: Shard, frame_tokens: int) -> list[tuple[int, int, int, int]]:
    """(local start, local stop, first frame, frame count) for each run of this rank's real tokens that the audio
    cross-attention can take in one call: whole frames together, a partial frame alone."""
    runs, pos = [], shard.start
    while pos < shard.stop:
        frame = pos // frame_tokens
        whole = (shard.stop - pos) // frame_tokens if pos % frame_tokens == 0 else 0
        end = pos + whole * frame_tokens if whole else min(shard.stop, (frame + 1) * frame_tokens)
        runs.append((pos - shard.start, end - shard.start, frame, max(whole, 1)))
        pos = end
    return runs


class FrameRunAudioCrossAttention(AudioCrossAttention):
    """AudioCrossAttention for a rank's token slice: the official forward on each frame run, with that run's frames'
    audio keys and values; padding tokens get zeros (they are dropped at the end). Installed by swapping the
    module's class, not by an instance-level forward: every block then has the same forward code and equal `runs`,
    so the compiled blocks keep sharing one graph (a callable object per block made dynamo compile each block
    anew and, past its cache limit of 8, run the rest eagerly: 10% slower at 10 blocks on the H200)."""

    runs: tuple[tuple[int, int, int, int], ...] = ()  # set per grid by SequenceParallel

    def forward(self, x: torch.Tensor, context: tuple[torch.Tensor, ...]) -> torch.Tensor:
        k, v = context
        batch = x.shape[0]
        outs = []
        for lo, hi, frame, count in self.runs:
            kv = tuple(t.unflatten(0, (batch, -1))[:, frame : frame + count].flatten(0, 1) for t in (k, v))
            outs.append(super().forward(x[:, lo:hi], kv))
        used = self.runs[-1][1] if self.runs else 0
        if used < x.shape[1]:
            outs.append(x.new_zeros(batch, x.shape[1] - used, x.shape[2]))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # one run (e.g. one rank): no copy


# ---- the forward ------------------------------------------------------------------------------------------------


class SequenceParallel:
    """A model's forward over a process group. Every rank calls `conditions` and `forward` with the same inputs
    (SPMD); each returns the full prediction. Installs its kernels into the model: that model is this group's."""

    def __init__(self, model: InfiniteTalkModel, group: Group = None):
        self.model, self.group = model, group
        self.world = dist.get_world_size(group)
        check_heads(model.config.num_heads, self.world)
        inner = model.typed_blocks()[0].self_attn.attend
        self.inner: Attention = inner.inner if isinstance(inner, UlyssesAttention) else inner
        self.audio: list[FrameRunAudioCrossAttention] = []
        for block in model.typed_blocks():
            block.audio_cross_attn.__class__ = FrameRunAudioCrossAttention  # no new parameters: keys unchanged
            self.audio.append(cast(FrameRunAudioCrossAttention, block.audio_cross_attn))
        self._installed: tuple[Shard, tuple[int, int, int]] | None = None

    def release(self) -> None:
        """Give the model its single-device kernels back (the attention it had, the class's audio forward); this
        SequenceParallel is done (a new one installs its kernels again)."""
        self.model.use_attention(self.inner)
        for audio in self.audio:
            vars(audio).pop("runs", None)
            cast(AudioCrossAttention, audio).__class__ = AudioCrossAttention
        self._installed = None

    def conditions(
        self, context: torch.Tensor, clip_fea: torch.Tensor, audio: torch.Tensor, grid: tuple[int, int, int]
    ) -> Conditions:
        """The model's conditions with the rope tables cut to this rank's tokens (padding rows: angle 0)."""
        full = self.model.conditions(context, clip_fea, audio, grid)
        shard = self._use_shard(math.prod(grid), grid)
        rope = tuple(F.pad(t[shard.start : shard.stop], (0, 0, 0, shard.padding)) for t in full.rope)
        return Conditions(full.grid, (rope[0], rope[1]), full.blocks)

    def _use_shard(self, tokens: int, grid: tuple[int, int, int]) -> Shard:
        """This rank's slice of a grid, its kernels set for it (again only when the grid changes)."""
        shard = shard_of(tokens, self.group)
        if (shard, grid) != self._installed:
            self.model.use_attention(UlyssesAttention(self.inner, shard, self.group))
            for audio in self.audio:
                audio.runs = tuple(frame_runs(shard, grid[1] * grid[2]))  # same token count, other frame size: new runs
            self._installed = (shard, grid)
        return shard

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, conditions: Conditions, audio_scale: float = 1.0
    ) -> torch.Tensor:
        """InfiniteTalkModel.forward with `conditions` from self.conditions; the same prediction on every rank."""
        model, cfg = self.model, self.model.config
        dtype = model.patch_embedding.weight.dtype
        tokens = model.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = (tokens.shape[2], tokens.shape[3], tokens.shape[4])
        if grid != conditions.grid:
            raise ValueError(f"conditions were made for a {conditions.grid} token grid, the latent has {grid}")
        shard = self._use_shard(math.prod(grid), grid)
        local = F.pad(tokens.flatten(2).transpose(1, 2)[:, shard.start : shard.stop], (0, 0, 0, shard.padding))
        e = run_fp32(model.time_embedding, sinusoidal_embedding(cfg.freq_dim, t))
        e0 = run_fp32(model.time_projection, e).unflatten(1, (6, cfg.dim))
        gain = torch.as_tensor(audio_scale, dtype=torch.float32, device=local.device)
        if getattr(model, "_compile_mode", None) == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # as InfiniteTalkModel.forward: a new forward begins
        for block, block_context in zip(model.blocks, conditions.blocks):
            local = block(local, e0, conditions.rope, block_context, gain)
        return model.unpatchify(self.gather(model.head(local, e), shard), grid)

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, conditions: Conditions, audio_scale: float = 1.0
    ) -> torch.Tensor:
        return self.forward(x, t, y, conditions, audio_scale)

    def gather(self, local: torch.Tensor, shard: Shard) -> torch.Tensor:
        """Every rank's [B, n, C] -> [B, L, C] (padding dropped), on every rank."""
        if self.world == 1:
            return local[:, : shard.tokens]
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)[:, : shard.tokens]
