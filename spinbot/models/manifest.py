"""Where each seed default model file comes from: repository, pinned revision, path in the repository, size, sha256.

Keyed by the file's place in SPINBOT_MODELS_DIR (ComfyUI's `models/` layout, docs/models.md). `spinbot models pull`
fetches what is missing from here; a file that a param names but that is not listed (a non-default name) has no
source and must be put in place by hand.

How each entry was learned (docs/models.md, "Sources", says the same per file):
- sha256 and size: the Hugging Face Hub's LFS pointer of the file (its commit diff or blob page), or, for the two
  GitHub release assets, the LFS pointers of several independent Hub mirrors that agree. None where no published
  hash was found; `pull` then checks the hash the hub reports while downloading (LFS files: X-Linked-Etag).
- revision: the full commit sha of a commit that holds the file, where one was found; "main" where only short shas
  were published (noted per entry).
- the key layout: by arithmetic on the published byte size where it is known exactly (a safetensors file is 8 bytes
  + its JSON header + its tensors, so the key names, shapes and dtypes the architecture implies must add up to the
  size): wan2.1_i2v_720p_14B_bf16 matches to the byte with the official key names, no prefix, every tensor bf16;
  the InfiniteTalk adapter matches (within its 40-byte metadata) with no prefix, weight matrices fp16, biases, norms
  and audio_proj fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

HF = "https://huggingface.co"


@dataclass(frozen=True)
class Source:
    """One file's public origin. Either a Hub file (repo, revision, path) or a plain URL (files not on the Hub)."""

    repo: str | None = None  # Hub repository, owner/name
    revision: str | None = None  # full commit sha, or a branch where no sha could be learned (see note)
    path: str | None = None  # path inside the repository
    url: str | None = None  # plain HTTP source, for files not on the Hub
    sha256: str | None = None
    size: int | None = None  # bytes; None where only a rounded size was published
    note: str = ""

    @property
    def is_hub(self) -> bool:
        return self.repo is not None

    @property
    def pinned(self) -> bool:
        return self.url is not None or (self.revision is not None and len(self.revision) == 40)

    def describe(self) -> str:
        if self.is_hub:
            return f"hf://{self.repo}@{self.revision}/{self.path}"
        return str(self.url)


KIJAI = "Kijai/WanVideo_comfy"
COMFY_WAN = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
WAV2VEC = "TencentGameMate/chinese-wav2vec2-base"
WAV2VEC_REV = "3991242c806928916fff4a8c0e4f76acf661b743"  # main's head: config, preprocessor config, weights
F5_NOTE = "revision: only the short sha d6bd6c3 of the commit that added F5TTS_v1_Base was found; main is used"
VOCOS_NOTE = "revision: only short shas were found; main is used"

SOURCES: dict[str, Source] = {
    # f5_to_tts (model=F5TTS_v1_Base)
    "F5-TTS/F5TTS_v1_Base/model_1250000.safetensors": Source(
        "SWivid/F5-TTS",
        "main",
        "F5TTS_v1_Base/model_1250000.safetensors",
        sha256="670900fd14e6c458b95da6e9ed317cdb20dbaf7a1c02ac06a05475a9d32b6a38",
        note=F5_NOTE,
    ),
    "F5-TTS/F5TTS_v1_Base/vocab.txt": Source(
        "SWivid/F5-TTS", "main", "F5TTS_v1_Base/vocab.txt", note=F5_NOTE + "; a git file: no published sha256"
    ),
    "F5-TTS/vocos-mel-24khz/config.yaml": Source("charactr/vocos-mel-24khz", "main", "config.yaml", note=VOCOS_NOTE),
    "F5-TTS/vocos-mel-24khz/pytorch_model.bin": Source(
        "charactr/vocos-mel-24khz", "main", "pytorch_model.bin", note=VOCOS_NOTE + "; sha256 from the hub's LFS etag"
    ),
    # infinite_talk
    "diffusion_models/wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors": Source(
        COMFY_WAN,
        "8ddd6780aaba11a2a8eeb1039d8c6d54600ef9f1",
        "split_files/diffusion_models/wan2.1_i2v_720p_14B_bf16.safetensors",
        sha256="8ef7ea5bf9eea636b9b3ebd84c40671b4a18ae2704cb4c8595cb5b25c1d8e8b9",
        size=32789894024,
    ),
    "diffusion_models/wanvideo/infinite_talk/Wan2_1-InfiniTetalk-Single_fp16.safetensors": Source(
        KIJAI,
        "2020642bb285ef8a8eb6b1738526569a53f88dc6",
        "InfiniteTalk/Wan2_1-InfiniTetalk-Single_fp16.safetensors",
        sha256="bf212c5c647eaf1c019b2158d2edf4a360d97e38b746c4bac994fee485e09fc3",
        size=5125258232,
    ),
    "loras/wanvideo/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors": Source(
        KIJAI,
        "761b2c092fe59cdb5a06df12cf0013d1d29d037d",
        "Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        sha256="85c4a61c30e0497aa44b91d93a893b624708461a56fe5485183b28fa07e2dfb3",
        note="revision: a later commit of the repository (the file's own commit has only a short sha); the file "
        "is in the Lightx2v folder's listing after it, not downloaded here",
    ),
    "vae/wanvideo/Wan2_1_VAE_bf16.safetensors": Source(
        KIJAI,
        "8b7b90374c9f79fe5bf2e82da0db233645ebd63f",
        "Wan2_1_VAE_bf16.safetensors",
        sha256="e027f6859a9c0f4dbfbaa9d1f27b1e5f371a5b8462e8d2d74c1ee8c44c20b1a8",
    ),
    "text_encoders/umt5/umt5-xxl-enc-bf16.safetensors": Source(
        KIJAI,
        "8b7b90374c9f79fe5bf2e82da0db233645ebd63f",
        "umt5-xxl-enc-bf16.safetensors",
        sha256="4fa971faf306cad919033d5bbe192e571dc08452f800cbf2ec3c73977c01b2cc",
        size=11361845464,
    ),
    "text_encoders/umt5/tokenizer.json": Source(
        "Wan-AI/Wan2.1-I2V-14B-720P",
        "e4ee54a135ae9c9a09329aab39a6e9e6f59ef091",
        "google/umt5-xxl/tokenizer.json",
        note="google/umt5-xxl's tokenizer as Wan ships it; sha256 from the hub's LFS etag",
    ),
    "clip_vision/wanvideo/clip_vision_h.safetensors": Source(
        COMFY_WAN,
        "55dc69dfdb9c8806600cce6c26a619e1734999e0",
        "split_files/clip_vision/clip_vision_h.safetensors",
        sha256="64a7ef761bfccbadbaa3da77366aac4185a6c58fa5de5f589b42a65bcc21f161",
        size=1264219396,
    ),
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/config.json": Source(WAV2VEC, WAV2VEC_REV, "config.json"),
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/preprocessor_config.json": Source(
        WAV2VEC,
        WAV2VEC_REV,
        "preprocessor_config.json",
        size=160,
        sha256="c1707926644954affc391ab09ccfaf470ccd80af218d11350991090711441c09",
    ),  # do_normalize false
    "wav2vec2/TencentGameMate/chinese-wav2vec2-base/pytorch_model.bin": Source(
        WAV2VEC, WAV2VEC_REV, "pytorch_model.bin", note="sha256 from the hub's LFS etag"
    ),
    # upscale_video
    "upscale_models/RealESRGAN_x2.pth": Source(
        "ai-forever/Real-ESRGAN",
        "ce23cf9d8a90d83437421b8c37811dec0e522924",
        "RealESRGAN_x2.pth",
        sha256="c830d067d54fc767b9543a8432f36d91bc2de313584e8bbfe4ac26a47339e899",
    ),
    "facerestore_models/codeformer.pth": Source(
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        size=376637898,
        note="a GitHub release asset, not on the Hub; hash and size from three Hub mirrors that agree",
    ),
    "facedetection/detection_Resnet50_Final.pth": Source(
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        size=109497761,
        note="a GitHub release asset, not on the Hub; hash and size from many Hub mirrors that agree",
    ),
}


def source_for(relpath: str) -> Source | None:
    return SOURCES.get(relpath)
