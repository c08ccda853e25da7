"""Find the files InfiniteTalkParams names in SPINBOT_MODELS_DIR and load every model, kept in the worker's cache.

Where each param is looked up (ComfyUI's models/ layout, docs/models.md):
  wan_video_model, infinitetalk_model -> diffusion_models/<path>   (merged into one transformer:
                                                                     transformer_checkpoint.py)
  lora_model                          -> loras/<path>              (empty: no LoRA)
  vae_model                           -> vae/<path>
  t5_text_encoder_model               -> text_encoders/<path>      (+ tokenizer.json beside it)
  clip_vision_model                   -> clip_vision/<path>
  wav2vec_model                       -> wav2vec2/<path>/          (a transformers folder)
Every file is checked before any is read, so a missing one fails at once with one line naming the param, the file
and the folder.

The transformer's sizes are read from the checkpoint headers (a 14B checkpoint and a tiny test one load through the
same code); heads are 128 wide, as in every Wan 2.1 model, since no shape tells the head count. The ComfyUI
repackagings may nest the keys under `model.diffusion_model.` or `diffusion_model.`: the prefix is found per file, so
a prefixed Wan file and Kijai's unprefixed InfiniteTalk file load together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from safetensors import safe_open

from spinbot.backends.attention import resolve_attention, select_attention
from spinbot.backends.fp8 import INFINITETALK_LINEARS, use_fp8
from spinbot.backends.talk.infinitetalk.audio import AudioEncoder, load_audio_encoder
from spinbot.backends.talk.infinitetalk.clip import ClipImageEncoder, load_clip_vision
from spinbot.backends.talk.infinitetalk.files import FOLDERS
from spinbot.backends.talk.infinitetalk.lora import LoraReport, merge_lora
from spinbot.backends.talk.infinitetalk.model import WAV2VEC_DIM, WAV2VEC_LAYERS, InfiniteTalkConfig, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.t5 import TextEncoder, load_text_encoder
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import MARKER_KEYS, CheckpointError, load_model
from spinbot.backends.talk.infinitetalk.vae import WanVAE, load_vae
from spinbot.errors import BackendUnavailable
from spinbot.models.headers import not_safetensors

T = TypeVar("T")

HEAD_DIM = 128
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


@dataclass(frozen=True)
class Precision:
    device: torch.device
    transformer: torch.dtype  # matmul weights; norms and modulations stay float32 (transformer_checkpoint.py)
    encoders: torch.dtype  # UMT5, CLIP
    audio: torch.dtype = torch.float32  # wav2vec2 is small and its features feed every window
    # The VAE in float32, as the official pipeline runs it: each window re-encodes the last one's frames, and
    # bfloat16 put 0.65 levels (mean) / 4 levels (max) of rounding into every decode (docs/infinitetalk-notes.md)
    vae: torch.dtype = torch.float32
    fp8: bool = False  # CUDA: the blocks' big linears in e4m3 (spinbot.backends.fp8), after the LoRA merge
    attention: str = "sdpa"  # spinbot.backends.attention: sdpa, int8, fp8, cudnn-fp8 (auto resolved)
    fast_vae: bool = False  # CUDA: the VAE's convolutions channels-last, its norms compiled (WanVAE.speed_up)

    @classmethod
    def for_device(
        cls,
        device: torch.device,
        fp8: bool = False,
        attention: str = "auto",
        fast_vae: bool = False,
        vae_dtype: str = "float32",
    ) -> Precision:
        half = torch.bfloat16 if device.type == "cuda" else torch.float32  # CPU bfloat16 kernels are slow
        cuda = device.type == "cuda"
        vae = torch.bfloat16 if cuda and vae_dtype == "bfloat16" else torch.float32
        kernel = resolve_attention(attention, device)
        return cls(device, half, half, vae=vae, fp8=fp8 and cuda, attention=kernel, fast_vae=fast_vae and cuda)


@dataclass
class Models:
    transformer: InfiniteTalkModel
    vae: WanVAE
    text: TextEncoder  # kept on the CPU between uses, see on_device
    clip: ClipImageEncoder  # likewise
    audio: AudioEncoder
    lora: LoraReport | None
    files: dict[str, Path]


def resolve_files(params: Any, models_dir: Path) -> dict[str, Path]:
    """param -> path, every one checked to exist; an empty lora_model means no LoRA."""
    files = {}
    for param, (folder, is_dir) in FOLDERS.items():
        name = getattr(params, param)
        if param == "lora_model" and not name:
            continue
        path = models_dir / folder / name
        if not (path.is_dir() if is_dir else path.is_file()):
            kind = "folder" if is_dir else "file"
            raise BackendUnavailable(
                f"infinite_talk native: {param} {kind} {name} not found: looked for {path} "
                f"(SPINBOT_MODELS_DIR={models_dir})"
            )
        files[param] = path
    return files


def load_models(params: Any, models_dir: Path, precision: Precision, lora_strength: float = 1.0) -> Models:
    files = resolve_files(params, models_dir)
    p, device = precision, precision.device
    talk_tag = (
        f"{device}:{p.transformer}:fp8={p.fp8}:attention={p.attention}:{files['infinitetalk_model']}:"
        f"{files.get('lora_model')}:{lora_strength}"
    )
    transformer, lora = cached(
        "transformer",
        files["wan_video_model"],
        talk_tag,
        lambda: load_transformer(files, p, lora_strength),
        size=_size(files, "wan_video_model", "infinitetalk_model"),
    )
    vae = cached(
        "vae",
        files["vae_model"],
        f"{device}:{p.vae}:fast={p.fast_vae}",
        lambda: load_vae(files["vae_model"], p.vae, device, fast=p.fast_vae),
    )
    # UMT5 (11 GB) and CLIP are used once per job: they live on the CPU and visit the GPU (pipeline.on_device)
    text = cached(
        "umt5",
        files["t5_text_encoder_model"],
        f"cpu:{p.encoders}",
        lambda: load_text_encoder(files["t5_text_encoder_model"], p.encoders, "cpu"),
    )
    clip = cached(
        "clip",
        files["clip_vision_model"],
        f"cpu:{p.encoders}",
        lambda: load_clip_vision(files["clip_vision_model"], p.encoders, "cpu"),
    )
    audio = cached(
        "wav2vec2",
        files["wav2vec_model"],
        f"{device}:{p.audio}",
        lambda: load_audio_encoder(files["wav2vec_model"], p.audio, device),
    )
    return Models(transformer, vae, text, clip, audio, lora, files)


def load_transformer(
    files: dict[str, Path], precision: Precision, lora_strength: float
) -> tuple[InfiniteTalkModel, LoraReport | None]:
    paths = transformer_paths(files)
    prefixes = file_prefixes(paths)
    config = transformer_config(paths, prefixes)
    model = load_model(paths, config, precision.transformer, precision.device, prefixes)
    lora = merge_lora(model, files["lora_model"], lora_strength) if "lora_model" in files else None
    if precision.fp8:
        use_fp8(model.blocks, INFINITETALK_LINEARS, fast_accum=True)
    model.use_attention(select_attention(precision.attention, precision.device, "SPINBOT_TALK_ATTENTION"))
    return model, lora


def transformer_paths(files: dict[str, Path]) -> list[Path]:
    """The files merged into the transformer, in merge order (later keys win)."""
    return [files["wan_video_model"], files["infinitetalk_model"]]


def file_prefixes(paths: list[Path]) -> list[str]:
    """Each file's key prefix: the first of KEY_PREFIXES that all its keys share (a scaled-fp8 marker aside), ''
    when none does."""
    prefixes = []
    for path in paths:
        keys = [k for k in _header(path) if k not in MARKER_KEYS]
        prefixes.append(next((p for p in KEY_PREFIXES if keys and all(k.startswith(p) for k in keys)), ""))
    return prefixes


def transformer_config(paths: list[Path], prefixes: str | list[str] = "") -> InfiniteTalkConfig:
    """InfiniteTalkConfig from the checkpoints' tensor shapes; a key it needs that is absent keeps the 14B default,
    and the load then names it as missing."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path, prefix in zip(paths, [prefixes] * len(paths) if isinstance(prefixes, str) else prefixes):
        shapes.update({k[len(prefix) :]: v for k, v in _header(path).items() if k.startswith(prefix)})
    default = InfiniteTalkConfig()

    def dim(key: str, axis: int, fallback: int) -> int:
        return shapes[key][axis] if key in shapes else fallback

    width = WAV2VEC_LAYERS * WAV2VEC_DIM
    hidden = dim("patch_embedding.weight", 0, default.dim)
    output_dim = dim("blocks.0.audio_cross_attn.kv_linear.weight", 1, default.output_dim)
    audio_window = dim("audio_proj.proj1.weight", 1, default.audio_window * width) // width
    layers = {int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")}
    return InfiniteTalkConfig(
        patch_size=cast("tuple[int, int, int]", shapes.get("patch_embedding.weight", (0, 0, *default.patch_size))[2:]),
        in_dim=dim("patch_embedding.weight", 1, default.in_dim),
        dim=hidden,
        ffn_dim=dim("blocks.0.ffn.0.weight", 0, default.ffn_dim),
        freq_dim=dim("time_embedding.0.weight", 1, default.freq_dim),
        text_dim=dim("text_embedding.0.weight", 1, default.text_dim),
        out_dim=dim("head.head.weight", 0, default.out_dim * 4) // 4,
        num_heads=max(1, hidden // HEAD_DIM),
        num_layers=max(layers) + 1 if layers else default.num_layers,
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        audio_window=audio_window,
        intermediate_dim=dim("audio_proj.proj1.weight", 0, default.intermediate_dim),
        output_dim=output_dim,
        context_tokens=dim("audio_proj.proj3.weight", 0, default.context_tokens * output_dim) // output_dim,
        vae_scale=dim("audio_proj.proj1_vf.weight", 1, (default.audio_window + 3) * width) // width - audio_window + 1,
        norm_input_visual="blocks.0.norm_x.weight" in shapes,
        norm_output_audio="audio_proj.norm.weight" in shapes,
    )


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), framework="numpy") as f:  # not pt: see spinbot.models.headers._safetensors_header
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise CheckpointError(f"InfiniteTalk checkpoint {path.name} is {not_safetensors(path, err)}") from None


def _size(files: dict[str, Path], *params: str) -> int:
    return sum(files[p].stat().st_size for p in params)


def cached(role: str, path: Path, tag: str, load: Callable[[], T], size: int | None = None) -> T:
    """The worker's model cache (shared with the other backends, within its memory budget), keyed by the file, the
    role and everything that changes the loaded weights (device, dtype, merged LoRA).

    No eviction hook: the job that loads five models may see the first evicted by the last when the budget is
    smaller than all of them (the 14B transformer alone is 38 GB in bfloat16), and it still uses it; eviction only
    drops the cache's reference, and the memory goes when the job lets go. Give SPINBOT_MODEL_CACHE_BYTES room for
    the whole set to keep them loaded between jobs."""
    from spinbot.worker.model_cache import get_model_cache

    size = path.stat().st_size if size is None and path.is_file() else size
    return get_model_cache().get(path, f"infinitetalk-{role}:{tag}", load, size=size)
