"""Where the native InfiniteTalk backend finds its files in SPINBOT_MODELS_DIR, by name only (no torch): the loader
(loading.py, t5.py) and `spinbot models list` (spinbot/models/needs.py) read the same names."""

from __future__ import annotations

FOLDERS = {  # param -> (folder in SPINBOT_MODELS_DIR, is a directory)
    "wan_video_model": ("diffusion_models", False),
    "infinitetalk_model": ("diffusion_models", False),
    "lora_model": ("loras", False),
    "vae_model": ("vae", False),
    "t5_text_encoder_model": ("text_encoders", False),
    "clip_vision_model": ("clip_vision", False),
    "wav2vec_model": ("wav2vec2", True),
}
TOKENIZER_FILE = "tokenizer.json"  # beside the UMT5 file
WAV2VEC_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # in the wav2vec2 folder: transformers' preference
