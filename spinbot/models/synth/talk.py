"""infinite_talk's files with random weights, in the seed files' layouts, names and dtypes.

- wan2.1_i2v_720p_14B_bf16.safetensors (Comfy-Org): the official Wan names, no prefix, every tensor bf16;
- Wan2_1-InfiniTetalk-Single_fp16.safetensors (Kijai): the adapter only (audio_proj.*, blocks.N.audio_cross_attn.*,
  blocks.N.norm_x.*), weight matrices fp16, biases, norms and audio_proj fp32 (both layouts verified against the
  published file sizes, spinbot/models/manifest.py);
- the lightx2v LoRA (Kijai): `diffusion_model.` + lora_down/lora_up for every linear, diff_b for biases, diff for
  norm scales and the patch embedding, diff_m for modulations, bf16;
- Wan2_1_VAE_bf16: the original Wan VAE names, bf16; umt5-xxl-enc-bf16: Wan's T5 names, bf16, with a tokenizer.json;
- clip_vision_h: transformers' CLIP vision names under `vision_model.` with the projection and position ids, fp16;
- chinese-wav2vec2-base: a Wav2Vec2ForPreTraining checkpoint (`wav2vec2.` prefix, quantizer and projection heads,
  old weight_g/weight_v names) as pytorch_model.bin, fp32, with config.json and preprocessor_config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spinbot.backends.talk.infinitetalk.audio import OFFICIAL_PREPROCESSOR
from spinbot.backends.talk.infinitetalk.clip import ClipVisionSize
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.t5 import UMT5Size, hf_to_wan
from spinbot.backends.talk.infinitetalk.vae import wan_name
from spinbot.models.layouts.infinitetalk import ADAPTER_KEYS
from spinbot.models.synth.tensors import Entry, write_safetensors

CLIP_PROJECTION = 1024  # ViT-H/14's projection width (in the file, unused)


@dataclass(frozen=True)
class TalkSizes:
    transformer: InfiniteTalkConfig
    lora_rank: int
    vae_base_dim: int
    umt5: UMT5Size
    clip: ClipVisionSize
    wav2vec: dict  # Wav2Vec2Config kwargs


TINY = TalkSizes(
    transformer=InfiniteTalkConfig(
        dim=256,
        num_heads=2,
        num_layers=2,
        ffn_dim=64,
        freq_dim=32,
        text_dim=32,
        intermediate_dim=16,
        output_dim=32,
        context_tokens=4,
    ),
    lora_rank=4,
    vae_base_dim=8,
    umt5=UMT5Size(vocab_size=64, d_model=32, d_ff=48, num_heads=4, num_layers=2, num_buckets=32),
    clip=ClipVisionSize(hidden_size=1280, intermediate_size=64, num_layers=2, patch_size=14, image_size=28),
    wav2vec={
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 32,
        "conv_dim": (32,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 16,
        "codevector_dim": 16,
        "proj_codevector_dim": 16,
        "num_codevectors_per_group": 8,
    },
)
FULL = TalkSizes(
    transformer=InfiniteTalkConfig(), lora_rank=64, vae_base_dim=96, umt5=UMT5Size(), clip=ClipVisionSize(), wav2vec={}
)


def write_talk(paths: dict[str, Path], sizes: TalkSizes, seed: int, device: torch.device) -> None:
    """`paths`: param -> file (wav2vec_model -> its folder), as the backend looks them up."""
    model = _meta_transformer(sizes.transformer)
    write_transformer(paths["wan_video_model"], paths["infinitetalk_model"], model, seed, device)
    write_lora(paths["lora_model"], model, sizes.lora_rank, seed, device)
    write_vae(paths["vae_model"], sizes.vae_base_dim, seed, device)
    write_umt5(paths["t5_text_encoder_model"], sizes.umt5, seed, device)
    write_clip(paths["clip_vision_model"], sizes.clip, seed, device)
    write_wav2vec(paths["wav2vec_model"], sizes.wav2vec, seed)


def _meta_transformer(config: InfiniteTalkConfig) -> InfiniteTalkModel:
    with torch.device("meta"):
        return InfiniteTalkModel(config)


def write_transformer(wan: Path, talk: Path, model: InfiniteTalkModel, seed: int, device: torch.device) -> None:
    wan_items, adapter_items = transformer_entries(model)
    write_safetensors(wan, wan_items, seed, device)
    write_safetensors(talk, adapter_items, seed, device)


def transformer_entries(model: InfiniteTalkModel) -> tuple[list[Entry], list[Entry]]:
    """The Wan file's entries (bf16) and the InfiniteTalk file's (fp16 matrices, fp32 vectors and audio_proj)."""
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    adapter = {k for k in state if any(part in k for part in ADAPTER_KEYS)}

    def adapter_dtype(key: str, shape: tuple[int, ...]) -> torch.dtype:
        return torch.float16 if len(shape) == 2 and not key.startswith("audio_proj.") else torch.float32

    return (
        [Entry(k, s, torch.bfloat16) for k, s in state.items() if k not in adapter],
        [Entry(k, state[k], adapter_dtype(k, state[k])) for k in sorted(adapter)],
    )


def write_lora(path: Path, model: InfiniteTalkModel, rank: int, seed: int, device: torch.device) -> None:
    write_safetensors(path, lora_entries(model, rank), seed, device)


def lora_entries(model: InfiniteTalkModel, rank: int) -> list[Entry]:
    items = []
    for name, module in model.named_modules():
        if any(part.strip(".") in name for part in ADAPTER_KEYS):
            continue  # the distillation LoRA predates the audio adapter
        key = f"diffusion_model.{name}"
        if isinstance(module, nn.Linear):
            items += [
                Entry(f"{key}.lora_down.weight", (rank, module.in_features), torch.bfloat16),
                Entry(f"{key}.lora_up.weight", (module.out_features, rank), torch.bfloat16, kind="small"),
                Entry(f"{key}.diff_b", (module.out_features,), torch.bfloat16),
            ]
        elif isinstance(module, nn.Conv3d) or (
            getattr(module, "weight", None) is not None and module.weight.dim() == 1
        ):
            items.append(Entry(f"{key}.diff", tuple(module.weight.shape), torch.bfloat16, kind="small"))
            if getattr(module, "bias", None) is not None:
                items.append(Entry(f"{key}.diff_b", tuple(module.bias.shape), torch.bfloat16))
        if isinstance(getattr(module, "modulation", None), nn.Parameter):
            items.append(Entry(f"{key}.diff_m", tuple(module.modulation.shape), torch.bfloat16))
    return items


def write_vae(path: Path, base_dim: int, seed: int, device: torch.device) -> None:
    write_safetensors(path, vae_entries(base_dim), seed, device)


def vae_entries(base_dim: int) -> list[Entry]:
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        vae = AutoencoderKLWan(base_dim=base_dim, z_dim=16)
    return [Entry(wan_name(k), tuple(v.shape), torch.bfloat16) for k, v in vae.state_dict().items()]


def write_umt5(path: Path, size: UMT5Size, seed: int, device: torch.device) -> None:
    write_safetensors(path, umt5_entries(size), seed, device, metadata={"format": "pt"})  # as the real file
    write_tokenizer(path.parent / "tokenizer.json", size.vocab_size)


def umt5_entries(size: UMT5Size) -> list[Entry]:
    from transformers import UMT5EncoderModel

    from spinbot.backends.talk.infinitetalk.weights import uninitialised

    with torch.device("meta"), uninitialised(torch.float32):
        state = UMT5EncoderModel(size.config()).state_dict()
    return [
        Entry(hf_to_wan(k), tuple(v.shape), torch.bfloat16)
        for k, v in state.items()
        if k != "encoder.embed_tokens.weight"
    ]


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A Unigram tokenizer of `vocab_size` pieces (google/umt5-xxl's shape: <pad>, </s>, <unk>, Metaspace, `</s>`
    appended); for tiny vocabularies a word-level one over the prompts the tests use."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<pad>", "</s>", "<unk>"]
    words = [
        "a",
        "man",
        "is",
        "talking",
        "to",
        "the",
        "camera",
        "natural",
        "facial",
        "expressions",
        "clear",
        "lip",
        "movement",
        "blurry",
        "distorted",
        "deformed",
        "face",
        "bad",
        "teeth",
        "static",
        "low",
        "quality",
        "watermark",
        "text",
    ]
    if vocab_size < 1000:
        vocab = {w: i for i, w in enumerate(specials + words[: vocab_size - len(specials)])}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    else:
        chars = [chr(c) for c in range(33, 127)]
        pieces = specials + ["▁" + w for w in words] + chars + ["▁" + c for c in chars]
        pieces += [f"▁p{i}" for i in range(vocab_size - len(pieces))]
        tokenizer = Tokenizer(models.Unigram([(p, 0.0 if p in specials else -10.0) for p in pieces], unk_id=2))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))


def write_clip(path: Path, size: ClipVisionSize, seed: int, device: torch.device) -> None:
    write_safetensors(path, clip_entries(size), seed, device)


def clip_entries(size: ClipVisionSize) -> list[Entry]:
    from transformers import CLIPVisionModel

    with torch.device("meta"):
        state = CLIPVisionModel(size.config()).state_dict()
    items = [
        Entry(f"vision_model.{k.removeprefix('vision_model.')}", tuple(v.shape), torch.float16)
        for k, v in state.items()
    ]
    positions = (size.image_size // size.patch_size) ** 2 + 1
    return items + [
        Entry("visual_projection.weight", (CLIP_PROJECTION, size.hidden_size), torch.float16),
        Entry("vision_model.embeddings.position_ids", (1, positions), torch.int64, kind="arange"),
    ]


def write_wav2vec(folder: Path, config_kwargs: dict, seed: int) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    torch.manual_seed(seed)
    config = Wav2Vec2Config(architectures=["Wav2Vec2ForPreTraining"], **config_kwargs)
    state = Wav2Vec2ForPreTraining(config).state_dict()
    state = {_old_weight_norm(k): v.contiguous() for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(folder / "config.json"))
    torch.save(state, folder / "pytorch_model.bin")
    # the official file, byte for byte (160 bytes, the Hub's sha256): no waveform normalization
    (folder / "preprocessor_config.json").write_text(json.dumps(OFFICIAL_PREPROCESSOR, indent=2) + "\n")


def _old_weight_norm(key: str) -> str:
    """torch's parametrization names -> the weight_g / weight_v names of checkpoints saved before 2023."""
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )
