"""The tiny InfiniteTalk configuration that scripts/make_infinitetalk_reference.py runs through the official code and
tests/unit/test_infinitetalk_reference.py runs through ours: sizes, settings, inputs and weights.

Weights and the large given inputs (CLIP features) are not stored in the reference file: every tensor is a pure
function of (seed, its name, its shape) -- uniform values from NumPy's PCG64 stream, whose output is fixed across
versions -- so both sides build the same numbers whatever library builds the module, and the file stays small
(wav2vec2 alone must be 12 layers x 768 wide, 28 M values, because the audio adapter reads that shape). The reference
file records each tensor's name, shape and checksum from the official run; the test checks them before comparing.
Imports only NumPy and PyTorch, so it runs beside the official code and beside ours.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

REFERENCE_FILE = "tests/reference/infinitetalk_pipeline_official.safetensors"
SEED = 20260101

# The official WanModel's constructor arguments at a tiny width (the audio adapter keeps wav2vec2's 12 x 768 input)
DIT = {
    "model_type": "i2v",
    "patch_size": (1, 2, 2),
    "text_len": 512,
    "in_dim": 36,
    "dim": 64,
    "ffn_dim": 128,
    "freq_dim": 32,
    "text_dim": 32,
    "out_dim": 16,
    "num_heads": 4,
    "num_layers": 2,
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
    "audio_window": 5,
    "intermediate_dim": 16,
    "output_dim": 32,
    "context_tokens": 4,
    "vae_scale": 4,
    "norm_input_visual": True,
    "norm_output_audio": True,
}
VAE_DIM = 8  # the official WanVAE_ `dim` (diffusers' base_dim); the rest is Wan 2.1's layout, z_dim 16
# chinese-wav2vec2-base's architecture where the adapter reads it (12 layers x 768), tiny elsewhere
WAV2VEC2 = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 32,
    "conv_dim": [32] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 16,
    "feat_extract_norm": "group",
    "conv_bias": False,
    "do_stable_layer_norm": False,
}
# chinese-wav2vec2-base's preprocessor_config.json as published (do_normalize false)
PREPROCESSOR = {
    "do_normalize": False,
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 16000,
}

# A tiny bucket table in the official form (aspect h / w -> (height, width)) standing in for the 480p one
BUCKETS = {"0.50": (16, 32), "1.00": (32, 32), "2.00": (32, 16)}
PORTRAIT_SIZE = (44, 30)  # (height, width): nearest bucket 1.00, enlarged to cover 32x32 (30 -> 32 wide)
FPS = 25
FRAMES = 156  # 6.24 s: three windows of 81 frames with 9 motion frames (the third one past the end)
SAMPLE_RATE = 16000

# The official settings (generate_infinitetalk.py's defaults) with few Euler steps
OFFICIAL = {
    "frame_num": 81,
    "motion_frame": 9,
    "sampling_steps": 4,
    "shift": 7.0,
    "text_guide_scale": 5.0,
    "audio_guide_scale": 4.0,
    "seed": 42,
    "color_correction_strength": 1.0,
}
PROMPT, NEGATIVE_PROMPT = "a person talking", "blurry"
PROMPT_TOKENS = {PROMPT: 7, NEGATIVE_PROMPT: 5}  # UMT5 returns the prompt's own length
CLIP_TOKENS, CLIP_DIM = 257, 1280


def canonical(name: str) -> str:
    """One name per tensor whatever the library version calls it (weight norm: weight_g / original0)."""
    return name.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


def generated(name: str, shape: tuple[int, ...], seed: int = SEED) -> torch.Tensor:
    """A float32 tensor for a parameter (or a given input) named `name`: norms near 1, biases and modulations
    small, matrices and kernels uniform with the variance 1 / fan_in."""
    key = canonical(name)
    n = math.prod(shape)
    u = np.random.Generator(np.random.PCG64(zlib.crc32(f"{seed}:{key}".encode()))).random(n) * 2.0 - 1.0
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ("gamma", "weight_g") or (len(shape) == 1 and leaf == "weight"):
        values = 1.0 + 0.1 * u
    elif leaf == "bias" or "modulation" in key:
        values = 0.05 * u
    elif len(shape) == 1:  # masked_spec_embed
        values = u
    else:
        values = u * math.sqrt(3.0 / math.prod(shape[1:]))
    return torch.from_numpy(values.astype(np.float32)).reshape(shape)


def generated_state(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    return {name: generated(name, tuple(shape), seed) for name, shape in shapes.items()}


def checksum(t: torch.Tensor) -> float:
    """A value that changes with any element: the sum of |x| weighted by position, float64."""
    flat = t.detach().double().flatten()
    return float((flat.abs() * torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)).sum())


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, list]:
    """name -> [shape, checksum], under canonical names, for the reference's metadata."""
    return {canonical(k): [list(v.shape), round(checksum(v), 6)] for k, v in sorted(state.items())}


def text_features(prompt: str) -> torch.Tensor:
    """UMT5 features of a prompt, given directly (the official encoder is UMT5-XXL, it does not shrink)."""
    return generated(f"text:{prompt}", (PROMPT_TOKENS[prompt], DIT["text_dim"]))


def clip_features() -> torch.Tensor:
    """CLIP ViT-H features of the portrait, given directly: [1, 257, 1280]."""
    return generated("clip_features", (1, CLIP_TOKENS, CLIP_DIM))


def portrait() -> np.ndarray:
    """RGB uint8 [44, 30, 3]: smooth colour ramps with a bright disc, so Lab statistics and motion have structure."""
    h, w = PORTRAIT_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    disc = ((yy - 18) ** 2 + (xx - 15) ** 2 < 80).astype(np.float64)
    rgb = np.stack([40 + 5 * xx + 60 * disc, 30 + 4 * yy + 50 * disc, 160 - 2 * xx - yy + 30 * disc], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def speech() -> np.ndarray:
    """FRAMES / FPS seconds of a voiced, syllable-modulated signal as int16 samples (exact in float32)."""
    t = np.arange(FRAMES * SAMPLE_RATE // FPS) / SAMPLE_RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * np.pi * 3.1 * t), 0, None) ** 0.5
    noise = np.random.Generator(np.random.PCG64(SEED)).standard_normal(t.size) * 0.02
    return np.round((0.25 * voiced * syllables + noise) * 32767 * 0.5).astype(np.int16)
