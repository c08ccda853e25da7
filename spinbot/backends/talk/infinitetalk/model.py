"""The InfiniteTalk transformer: Wan2.1's image-to-video DiT with InfiniteTalk's audio adapter, in one file (past
400 lines, as a diffusers or transformers model file is: the network reads top to bottom beside the official code).

Module and parameter names are the official checkpoints' own (MeiGen-AI/InfiniteTalk `wan/modules/multitalk_model.py`,
Wan2.1 I2V 14B + `infinitetalk.safetensors`), so `load_state_dict` takes those files' keys as they are:
`patch_embedding`, `text_embedding.{0,2}`, `time_embedding.{0,2}`, `time_projection.1`, `img_emb.proj.{0,1,3,4}`,
`audio_proj.{proj1,proj1_vf,proj2,proj3,norm}`, `blocks.N.{self_attn,cross_attn,audio_cross_attn,norm3,norm_x,ffn,
modulation}`, `head.{head,modulation}`.

The function is the official forward for one speaker. Differences that do not change the result:
- The official self-attention also computes a map of attention onto the reference frame per speaker mask
  (`ref_target_masks`) on every block; the audio cross-attention reads that map only when there are two or more
  speakers, so with one speaker the map (and the masks) cannot affect the output: it is not computed here.
- No padding of the token sequence to `seq_len` (that exists for sequence parallelism; on one device `seq_len` is
  exactly the token count, and padding would also misalign the audio cross-attention's per-frame grouping).
- RoPE is applied in float32 instead of float64 (the angles are still computed in float64).
- The batch dimension is a batch of samples (for example cond / no-audio guidance passes), one speaker each; in
  the official code the audio's batch dimension counts speakers of one sample.

Dtypes: the matmul weights may be bfloat16; the timestep path, the modulation arithmetic, norms and the output head
run in float32 (as the official code does under `autocast(float32)`), and `fp32_param_names` lists the parameters
worth keeping in float32 when the rest is cast down.

One file of about 470 lines, as the official model and transformers' modeling files are: the layers read top to
bottom in the order the forward uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

CLIP_DIM = 1280  # CLIP ViT-H/14 penultimate features, fixed in the official model
WAV2VEC_LAYERS = 12  # wav2vec2-base transformer layers stacked per audio frame
WAV2VEC_DIM = 768
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class InfiniteTalkConfig:
    """The official `WanModel` constructor arguments (same names, so its config.json loads as it is).
    Defaults: Wan2.1 I2V 14B (480p and 720p share the architecture) with the InfiniteTalk audio adapter."""

    model_type: str = "i2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 36  # 16 noisy latent + 4 mask + 16 image latent channels
    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 40
    num_layers: int = 40
    window_size: tuple[int, int] = (-1, -1)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    # InfiniteTalk's audio adapter
    audio_window: int = 5  # wav2vec2 frames around each video frame
    intermediate_dim: int = 512
    output_dim: int = 768  # audio token width
    context_tokens: int = 32  # audio tokens per latent frame
    vae_scale: int = 4  # video frames per latent frame (after the first)
    norm_input_visual: bool = True
    norm_output_audio: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        object.__setattr__(self, "window_size", tuple(self.window_size))
        if self.model_type != "i2v":
            raise ValueError(f"InfiniteTalk needs model_type 'i2v', got {self.model_type!r}")
        if self.window_size != (-1, -1):
            raise ValueError(f"local attention (window_size {self.window_size}) is not supported")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size")
        if self.vae_scale < 2:
            raise ValueError(f"vae_scale must be at least 2, got {self.vae_scale}")

    @classmethod
    def from_dict(cls, values: dict) -> InfiniteTalkConfig:
        """From the official constructor kwargs or config.json; bookkeeping keys (`_class_name`, `weight_init`)
        are dropped, any other unknown key is an error."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if not k.startswith("_") and k != "weight_init"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown InfiniteTalk config key {unknown[0]!r}")
        return cls(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


# ---- small layers -----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Wan's RMSNorm, computed in float32 whatever the activations' dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * self.weight.float()).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (weights may be kept in float32 while activations are bfloat16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())


def run_fp32(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """An MLP in float32 whatever its weights' dtype: the timestep path feeds every block's modulation."""
    for layer in seq:
        x = linear_fp32(layer, x) if isinstance(layer, nn.Linear) else layer(x)
    return x


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, L, heads, d] tensors, through SDPA (flash / memory-efficient kernels)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # attention()'s contract


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """[B] timesteps -> [B, dim] (cos | sin), computed in float64 as the official code does."""
    half = dim // 2
    position = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(position, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


# ---- rotary position embedding ----------------------------------------------------------------------------------


def rope_tables(head_dim: int, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [f*h*w, head_dim/2] float32, for 3-D RoPE over (frame, row, column).

    The head's dim/2 rotation pairs split as (c - 2*(c//3), c//3, c//3) between frame, row and column; each part
    has its own frequency ladder theta^(-2j/n) with n its width in channels; positions start at 0."""
    pairs = head_dim // 2
    widths = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
    axes = []
    for size, width in zip(grid, widths):
        inv = 1.0 / ROPE_THETA ** (torch.arange(width, dtype=torch.float64, device=device) * 2 / (2 * width))
        axes.append(torch.outer(torch.arange(size, dtype=torch.float64, device=device), inv))
    f, h, w = grid
    angles = torch.cat(
        [
            axes[0][:, None, None].expand(f, h, w, -1),
            axes[1][None, :, None].expand(f, h, w, -1),
            axes[2][None, None, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, pairs)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of [B, L, heads, d] by the token's angles; float32 out."""
    cos, sin = (t[None, :, None, :] for t in rope)
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


# ---- attention modules ------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Full self-attention over all video tokens with q/k RMSNorm (over the whole width) and 3-D RoPE. The kernel
    is `self.attend` (attention() by default; InfiniteTalkModel.use_attention swaps it, e.g. for 8-bit attention
    or a sequence-parallel wrapper): the only place the video tokens attend to each other."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.attend: Attention = attention
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        heads = (self.num_heads, -1)
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, heads), rope).to(x.dtype)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, heads), rope).to(x.dtype)
        v = self.v(x).unflatten(-1, heads)
        return self.o(self.attend(q, k, v).flatten(2))


class ImageTextCrossAttention(SelfAttention):
    """Cross-attention to the text tokens plus, with the same queries, to the CLIP image tokens; the two results
    are summed before the output projection. No key mask: padded text tokens are attended to, as in training."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__(dim, num_heads, qk_norm, eps)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def context(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Keys and values of the text and image tokens [B, len, heads, d]: the same for every step of a window."""
        heads = (self.num_heads, -1)
        return (
            self.norm_k(self.k(text)).unflatten(-1, heads),
            self.v(text).unflatten(-1, heads),
            self.norm_k_img(self.k_img(image)).unflatten(-1, heads),
            self.v_img(image).unflatten(-1, heads),
        )

    def forward(self, x: torch.Tensor, context: tuple[torch.Tensor, ...]) -> torch.Tensor:
        k, v, k_img, v_img = context
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        return self.o((attention(q, k, v) + attention(q, k_img, v_img)).flatten(2))


class AudioCrossAttention(nn.Module):
    """InfiniteTalk's audio cross-attention: the tokens of each latent frame attend to that frame's audio tokens
    only (the official SingleStreamAttention, qk_norm off). No RoPE with one speaker."""

    def __init__(self, dim: int, audio_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def context(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """audio [B, frames, M, audio_dim] -> keys and values [B * frames, M, heads, d], fixed for a window."""
        return self.kv_linear(audio.flatten(0, 1)).unflatten(-1, (2, self.num_heads, -1)).unbind(2)

    def forward(self, x: torch.Tensor, context: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """x [B, frames * S, dim]; context from `context()`."""
        k, v = context
        batch = x.shape[0]
        x = x.unflatten(1, (k.shape[0] // batch, -1)).flatten(0, 1)  # one attention problem per latent frame
        q = self.q_linear(x).unflatten(-1, (self.num_heads, -1))
        out = self.proj(attention(q, k, v).flatten(2))
        return out.unflatten(0, (batch, -1)).flatten(1, 2)


# ---- block, head, projections -----------------------------------------------------------------------------------


class Block(nn.Module):
    """One DiT block: modulated self-attention, text/image cross-attention, audio cross-attention, modulated FFN."""

    def __init__(self, cfg: InfiniteTalkConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = ImageTextCrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))
        self.audio_cross_attn = AudioCrossAttention(dim, cfg.output_dim, cfg.num_heads)
        self.norm_x = LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.norm_input_visual else nn.Identity()

    def context(self, image: torch.Tensor, text: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The cross-attentions' keys and values (text, image, audio): computed once per window."""
        return (*self.cross_attn.context(image, text), *self.audio_cross_attn.context(audio))

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: tuple[torch.Tensor, ...],
        audio_scale: torch.Tensor | float = 1.0,
    ) -> torch.Tensor:
        dtype = x.dtype
        # shift/scale/gate for attention and FFN, in float32 from the timestep embedding e [B, 6, dim]
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e).chunk(6, dim=1)
        y = self.self_attn((self.norm1(x).float() * (1 + scale1) + shift1).to(dtype), rope)
        x = (x + y.float() * gate1).to(dtype)
        x = x + self.cross_attn(self.norm3(x), context[:4])
        x = x + (self.audio_cross_attn(self.norm_x(x), context[4:]) * audio_scale).to(dtype)
        y = self.ffn((self.norm2(x).float() * (1 + scale2) + shift2).to(dtype))
        return (x + y.float() * gate2).to(dtype)


class Head(nn.Module):
    """Modulated LayerNorm and a linear map back to patch pixels, in float32."""

    def __init__(self, cfg: InfiniteTalkConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).chunk(2, dim=1)
        return linear_fp32(self.head, self.norm(x).float() * (1 + scale) + shift)


class ImageProjection(nn.Module):
    """CLIP image features -> image context tokens (official MLPProj)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim), LayerNorm(out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class AudioProjection(nn.Module):
    """Per-latent-frame wav2vec2 windows -> `context_tokens` audio tokens per latent frame (official AudioProjModel).
    The first latent frame (one video frame) and the later ones (vae_scale video frames each) have their own first
    layer because their windows differ in length."""

    def __init__(self, cfg: InfiniteTalkConfig):
        super().__init__()
        first_len, later_len = cfg.audio_window, cfg.audio_window + cfg.vae_scale - 1
        width = WAV2VEC_LAYERS * WAV2VEC_DIM
        self.context_tokens, self.output_dim = cfg.context_tokens, cfg.output_dim
        self.proj1 = nn.Linear(first_len * width, cfg.intermediate_dim)
        self.proj1_vf = nn.Linear(later_len * width, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim)
        self.norm = LayerNorm(cfg.output_dim) if cfg.norm_output_audio else nn.Identity()

    def forward(self, first: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        """first [B, 1, window, layers, C], later [B, frames-1, window', layers, C] -> [B, frames, tokens, out]."""
        h = torch.cat([torch.relu(self.proj1(first.flatten(2))), torch.relu(self.proj1_vf(later.flatten(2)))], 1)
        tokens = self.proj3(torch.relu(self.proj2(h))).unflatten(-1, (self.context_tokens, self.output_dim))
        return self.norm(tokens)


# ---- the model --------------------------------------------------------------------------------------------------


@dataclass
class Conditions:
    """A window's fixed inputs, made once for all its steps (InfiniteTalkModel.conditions)."""

    grid: tuple[int, int, int]  # token frames, rows, columns
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [tokens, head_dim / 2]
    blocks: list[tuple[torch.Tensor, ...]]  # per block: text k, v, image k, v, audio k, v


class InfiniteTalkModel(nn.Module):
    def __init__(self, cfg: InfiniteTalkConfig):
        super().__init__()
        self.config = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self.img_emb = ImageProjection(CLIP_DIM, dim)
        self.audio_proj = AudioProjection(cfg)

    def fp32_param_names(self) -> set[str]:
        """Parameters to keep in float32 when the model runs in bfloat16: norms, modulations, the timestep MLPs
        and the output head (small, and every output passes through them)."""
        names = set()
        for prefix, module in self.named_modules():
            keep = isinstance(module, (RMSNorm, LayerNorm, Head)) or prefix in ("time_embedding", "time_projection")
            for name, _ in module.named_parameters(recurse=keep):
                if keep or name == "modulation":
                    names.add(f"{prefix}.{name}" if prefix else name)
        return names

    def typed_blocks(self) -> list[Block]:
        """The blocks, as what they are (a ModuleList's items are plain modules to a type checker)."""
        return cast("list[Block]", list(self.blocks))

    def use_attention(self, attend: Attention) -> None:
        """Every block's self-attention kernel (e.g. spinbot.backends.attention's 8-bit kernels, or a sequence-
        parallel wrapper around one). Compiled blocks compile again for a new kernel."""
        for block in self.typed_blocks():
            block.self_attn.attend = attend

    def compile_blocks(self, mode: str | None = None) -> None:
        """torch.compile each block in place, once. On CUDA Inductor fuses the float32 modulation, norms and RoPE
        around the matmuls: 4.37 -> 3.14 s a forward at 480p, 14.98 -> 11.99 s at 720p on an H100
        (benchmarks/results/infinitetalk_gpu.json). The blocks share one graph (their parameters are its inputs);
        a new resolution compiles again (about 12 s). `mode` is torch.compile's (None: the default; "reduce-overhead"
        replays each block as a CUDA graph, "max-autotune-no-cudagraphs" searches matmul kernels)."""
        if getattr(self, "_compile_mode", "not compiled") == mode:
            return
        for block in self.blocks:
            block.compile(dynamic=False, mode=mode)
        self._compile_mode = mode

    def token_grid(self, latent_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
        """(frames, rows, columns) of tokens for a latent [B, C, T, H, W]."""
        frames, rows, columns = (size // patch for size, patch in zip(latent_shape[2:], self.config.patch_size))
        return frames, rows, columns

    def conditions(
        self, context: torch.Tensor, clip_fea: torch.Tensor, audio: torch.Tensor, grid: tuple[int, int, int]
    ) -> Conditions:
        """What every step of a window shares: the text, image and audio tokens projected to each block's cross-
        attention keys and values, and the RoPE tables (inputs as in forward)."""
        dtype = self.patch_embedding.weight.dtype
        text = self.text_embedding(self._pad_text(context).to(dtype))
        image = self.img_emb(clip_fea.to(dtype))
        audio_tokens = self.audio_tokens(audio.to(dtype), grid[0])
        rope = rope_tables(self.config.head_dim, grid, text.device)
        return Conditions(grid, rope, [block.context(image, text, audio_tokens) for block in self.typed_blocks()])

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None,
        clip_fea: torch.Tensor | None,
        y: torch.Tensor,
        audio: torch.Tensor | None,
        audio_scale: float = 1.0,
        conditions: Conditions | None = None,
    ) -> torch.Tensor:
        """One denoising prediction.

        x [B, 16, T, H, W] noisy latent; t [B] (or [1]) timesteps in [0, 1000]; context [B, L <= text_len,
        text_dim] text features, zero-padded here to text_len; clip_fea [B, 257, 1280]; y [B, 20, T, H, W] mask +
        image latent; audio [B, 1 + vae_scale*(T-1), audio_window, 12, 768] wav2vec2 windows per video frame,
        one speaker; audio_scale multiplies every block's audio cross-attention output (ComfyUI-WanVideoWrapper's
        `audio_scale`; 1.0 is the official model). `conditions` (from `conditions()`, once per window) replaces
        context, clip_fea and audio. Returns the flow prediction [B, 16, T, H, W] in float32.
        """
        cfg, dtype = self.config, self.patch_embedding.weight.dtype
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        if conditions is None:
            assert context is not None and clip_fea is not None and audio is not None, "forward without conditions"
            conditions = self.conditions(context, clip_fea, audio, grid)
        elif conditions.grid != grid:
            raise ValueError(f"conditions were made for a {conditions.grid} token grid, the latent has {grid}")

        e = run_fp32(self.time_embedding, sinusoidal_embedding(cfg.freq_dim, t))
        e0 = run_fp32(self.time_projection, e).unflatten(1, (6, cfg.dim))
        # a tensor, not a Python float: compiled blocks would specialise on the float's value and recompile for each
        audio_gain = torch.as_tensor(audio_scale, dtype=torch.float32, device=tokens.device)
        if getattr(self, "_compile_mode", None) == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new forward: the last one's graph outputs are consumed
        for block, block_context in zip(self.blocks, conditions.blocks):
            tokens = block(tokens, e0, conditions.rope, block_context, audio_gain)
        return self.unpatchify(self.head(tokens, e), grid)

    def _pad_text(self, context: torch.Tensor) -> torch.Tensor:
        """Zero rows up to text_len: the model was trained on zero-padded, unmasked text (zeros, not the encoder's
        output at pad tokens)."""
        length = context.shape[1]
        if length > self.config.text_len:
            raise ValueError(f"text context has {length} tokens, more than text_len {self.config.text_len}")
        return F.pad(context, (0, 0, 0, self.config.text_len - length))

    def audio_tokens(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """Per-video-frame wav2vec2 windows -> [B, latent frames, context_tokens, output_dim].

        Latent frame 0 is video frame 0 with its whole window. Each later latent frame covers vae_scale video frames
        and gets one window of audio_window + vae_scale - 1 features: the first half (and centre) of its first
        frame's window, the centre of each middle frame's, the centre and second half of its last frame's."""
        cfg = self.config
        expected = 1 + cfg.vae_scale * (frames - 1)
        if audio.shape[1] != expected:
            raise ValueError(f"audio covers {audio.shape[1]} video frames; {frames} latent frames need {expected}")
        mid = cfg.audio_window // 2
        later = audio[:, 1:].unflatten(1, (frames - 1, cfg.vae_scale))  # [B, frames-1, vae_scale, window, ...]
        later = torch.cat([later[:, :, 0, : mid + 1], later[:, :, 1:-1, mid], later[:, :, -1, mid:]], dim=2)
        return self.audio_proj(audio[:, :1], later)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """[B, f*h*w, pt*ph*pw*c] -> [B, c, f*pt, h*ph, w*pw]."""
        (f, h, w), (pt, ph, pw) = grid, self.config.patch_size
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, self.config.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], -1, f * pt, h * ph, w * pw)
