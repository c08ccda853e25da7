"""Run the official InfiniteTalk pipeline (`InfiniteTalkPipeline.generate_infinitetalk`, MeiGen-AI/InfiniteTalk) on
a tiny random-weight configuration and save its inputs, per-window latents and frames as the reference that
tests/unit/test_infinitetalk_reference.py compares our pipeline with.

    pip install --target third_party/transformers4 --no-deps \\
        transformers==4.49.0 huggingface_hub==0.29.3 tokenizers==0.21.1
    python scripts/make_infinitetalk_reference.py third_party/InfiniteTalk --commit 0107cd9

The checkout is the official repository (never committed here; keep it in the ignored third_party/). The run is
on the CPU in float32, about a minute. What runs as the official code: the wav2vec2 subclass and `get_embedding`
(generate_infinitetalk.py) on a waveform, the bucket sizing, the VAE (wan/modules/vae.py), the DiT
(wan/modules/multitalk_model.py), the whole streaming loop with its guidance passes, Euler steps, motion frames,
audio windows and colour correction (wan/multitalk.py). What is given instead:
- weights: tiny sizes (tests/support/infinitetalk_reference.py), values from a seeded generator, loaded through
  the official constructors and load_state_dict;
- UMT5 and CLIP features: the official encoders are UMT5-XXL and ViT-H and do not shrink; their outputs are
  generated tensors handed to the loop where it calls them (the image CLIP receives is recorded);
- the bucket table: a tiny one in the official form in place of ASPECT_RATIO_627 (the official rule runs on it;
  the real tables are recorded for the sizing test);
- packages this machine lacks (benchmarks/stand_ins.py: xfuser, xformers, decord, optimum-quanto, ...) and, for
  flash-attn, `flash_attention` as PyTorch SDPA in the inputs' precision: flash-attn computes in bf16 by design,
  which would put a bf16 error into a float32 reference (the transformer's bf16 behaviour is tested on its own);
- two calls that need a GPU or ffmpeg and change nothing here: torch_gc (CUDA cache) and get_video_codec
  (ffprobe, for AV1 video inputs); and `inspect.ArgSpec`, imported unused by wan/multitalk.py (written for Python
  3.10), gone from 3.11; torch.cuda.current_device() answers 0 while wan.multitalk imports (a default argument of
  T5EncoderModel, which is never built).
The official wav2vec2 subclass relies on transformers 4 (in 5 its encoder no longer returns hidden states), and
diffusers 0.42 needs huggingface_hub >= 1.32, which transformers 4 refuses: so the audio embedding runs in a child
process with transformers 4.49.0 (the official requirements' minimum) first on its path (--transformers4), the
generation in this one.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import types
from datetime import date
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # the official attention map is @torch.compile'd: run it eager

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from stand_ins import infinitetalk_official  # noqa: E402

from tests.support import infinitetalk_reference as ref  # noqa: E402

LATENT_CHANNELS = 16


def official_packages(checkout: Path) -> None:
    """`wan`, `wan.modules`, `wan.utils` as bare packages: their __init__ files import the whole model zoo."""
    sys.path.insert(0, str(checkout))
    for name in ("wan", "wan.modules", "wan.utils", "wan.distributed"):  # wan.configs stays a real package
        package = types.ModuleType(name)
        package.__path__ = [str(checkout / name.replace(".", "/"))]
        sys.modules[name] = package


# ---- stage 1, in a child process with transformers 4: the official audio embedding ----------------------------------


def audio_stage(checkout: Path, work: Path) -> None:
    stood_in = infinitetalk_official()
    official_packages(checkout)
    import transformers

    gen = importlib.import_module("generate_infinitetalk")
    from src.audio_analysis.wav2vec2 import Wav2Vec2Model

    folder = work / "chinese-wav2vec2-base"
    config = transformers.Wav2Vec2Config(**ref.WAV2VEC2)
    model = Wav2Vec2Model(config)
    state = ref.generated_state({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(state, strict=True)
    model.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(ref.PREPROCESSOR, indent=2) + "\n")

    extractor, encoder = gen.custom_init("cpu", str(folder))
    speech = ref.speech().astype(np.float32) / 32768.0
    embedding = gen.get_embedding(speech, extractor, encoder)  # [frames, 12, 768]
    torch.save(embedding, work / "audio_embedding.pt")
    (work / "audio_stage.json").write_text(
        json.dumps(
            {
                "transformers": transformers.__version__,
                "stand_ins": stood_in,
                "wav2vec2_weights": ref.fingerprint(state),
                "normalizes_waveform": bool(extractor.do_normalize),
            }
        )
    )


# ---- stage 2, here: the official generation loop ------------------------------------------------------------------


def flash_attention_sdpa(
    q,
    k,
    v,
    q_lens=None,
    k_lens=None,
    dropout_p=0.0,
    softmax_scale=None,
    q_scale=None,
    causal=False,
    window_size=(-1, -1),
    deterministic=False,
    dtype=None,
    version=None,
):
    """flash_attention()'s contract ([B, L, N, C], keys past k_lens masked) as SDPA in the inputs' precision."""
    mask = None
    if k_lens is not None:
        mask = (torch.arange(k.shape[1])[None, :] < k_lens[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=causal, scale=softmax_scale
    )
    return out.transpose(1, 2).type_as(q)


class Recorder:
    """What the loop draws and computes per window: initial noise, motion latents, latents before decoding."""

    def __init__(self):
        self.noise: list[torch.Tensor] = []
        self.motion: list[torch.Tensor] = []
        self.latents: list[torch.Tensor] = []
        self.clip_inputs: list[torch.Tensor] = []


def official_vae(multitalk, work: Path):
    """The official WanVAE (float32) at the tiny width, its weights generated and loaded by its own loader."""
    vae_module = sys.modules["wan.modules.vae"]
    with torch.device("meta"):
        shapes = {
            k: tuple(v.shape)
            for k, v in vae_module.WanVAE_(
                dim=ref.VAE_DIM,
                z_dim=LATENT_CHANNELS,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
                dropout=0.0,
            )
            .state_dict()
            .items()
        }
    state = ref.generated_state(shapes)
    torch.save(state, work / "vae.pth")
    original = vae_module._video_vae
    vae_module._video_vae = lambda pretrained_path=None, z_dim=None, device="cpu", **kw: original(
        pretrained_path=pretrained_path, z_dim=z_dim, device=device, dim=ref.VAE_DIM, **kw
    )
    try:
        vae = multitalk.WanVAE(vae_pth=str(work / "vae.pth"), device=torch.device("cpu"))
    finally:
        vae_module._video_vae = original
    return vae, state


def official_pipeline(multitalk, work: Path, rec: Recorder):
    """InfiniteTalkPipeline as its constructor leaves it for one device, without the files it would read."""
    pipe = multitalk.InfiniteTalkPipeline.__new__(multitalk.InfiniteTalkPipeline)
    cpu = torch.device("cpu")
    pipe.__dict__.update(
        device=cpu,
        rank=0,
        use_usp=False,
        t5_cpu=False,
        num_train_timesteps=1000,
        param_dtype=torch.float32,
        vae_stride=(4, 8, 8),
        patch_size=tuple(ref.DIT["patch_size"]),
        sp_size=1,
        sample_neg_prompt="",
        num_timesteps=1000,
        use_timestep_transform=True,
        cpu_offload=False,
        model_names=["model"],
        vram_management=False,
    )
    model = multitalk.WanModel(weight_init=False, **ref.DIT)
    dit_state = ref.generated_state({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict(dit_state, strict=True)
    pipe.model = model.eval().requires_grad_(False)
    pipe.vae, vae_state = official_vae(multitalk, work)
    decode, encode = pipe.vae.decode, pipe.vae.encode

    def recording_decode(zs):
        rec.latents.append(zs[0].detach().clone())
        return decode(zs)

    def recording_encode(videos):
        out = encode(videos)
        if videos[0].shape[1] != ref.OFFICIAL["frame_num"]:  # not y (portrait + zeros): the motion frames
            rec.motion.append(out[0].detach().clone())
        return out

    pipe.vae.decode, pipe.vae.encode = recording_decode, recording_encode

    def text_encoder(texts, device):
        return [ref.text_features(t) for t in texts]

    def visual(image):
        rec.clip_inputs.append(image.detach().clone())
        return ref.clip_features()

    pipe.text_encoder = TextEncoderStandIn(text_encoder)
    pipe.clip = types.SimpleNamespace(model=torch.nn.Module(), visual=visual)
    return pipe, {"dit": ref.fingerprint(dit_state), "vae": ref.fingerprint(vae_state)}


class TextEncoderStandIn:
    """The official T5EncoderModel's call: ([prompts], device) -> [features per prompt, trimmed to its length]."""

    def __init__(self, encode):
        self.model = torch.nn.Module()
        self.encode = encode

    def __call__(self, texts, device):
        return self.encode(texts, device)


def generation_stage(checkout: Path, work: Path, portrait_path: Path) -> tuple[torch.Tensor, Recorder, dict]:
    stood_in = infinitetalk_official()
    official_packages(checkout)
    if not hasattr(inspect, "ArgSpec"):  # wan/multitalk.py imports it, unused; Python 3.11 removed it
        inspect.ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # T5EncoderModel's default argument, evaluated at import; never built
    try:
        multitalk = importlib.import_module("wan.multitalk")
    finally:
        torch.cuda.current_device = current_device
    utils = importlib.import_module("wan.utils.multitalk_utils")
    model_module = importlib.import_module("wan.modules.multitalk_model")
    tables = {
        "480p": {k: v[0] for k, v in utils.ASPECT_RATIO_627.items()},
        "720p": {k: v[0] for k, v in utils.ASPECT_RATIO_960.items()},
    }
    utils.ASPECT_RATIO_627 = {k: ([h, w], 1) for k, (h, w) in ref.BUCKETS.items()}
    model_module.flash_attention = flash_attention_sdpa
    multitalk.torch_gc = utils.torch_gc = lambda: None
    multitalk.get_video_codec = lambda path: "png"
    rec = Recorder()
    pipe, weights = official_pipeline(multitalk, work, rec)

    randn = torch.randn
    latent_frames = 1 + (ref.OFFICIAL["frame_num"] - 1) // 4

    def recording_randn(*size, **kwargs):
        out = randn(*size, **kwargs)
        if len(size) == 4 and size[0] == LATENT_CHANNELS and size[1] == latent_frames:
            rec.noise.append(out.detach().clone())
        return out

    o = ref.OFFICIAL
    torch.randn = recording_randn
    try:
        video = pipe.generate_infinitetalk(
            {
                "prompt": ref.PROMPT,
                "cond_video": str(portrait_path),
                "cond_audio": {"person1": str(work / "audio_embedding.pt")},
            },
            size_buckget="infinitetalk-480",
            motion_frame=o["motion_frame"],
            frame_num=o["frame_num"],
            shift=o["shift"],
            sampling_steps=o["sampling_steps"],
            text_guide_scale=o["text_guide_scale"],
            audio_guide_scale=o["audio_guide_scale"],
            n_prompt=ref.NEGATIVE_PROMPT,
            seed=o["seed"],
            offload_model=False,
            max_frames_num=1000,
            progress=False,
            color_correction_strength=o["color_correction_strength"],
            extra_args=types.SimpleNamespace(use_teacache=False, use_apg=False),
        )
    finally:
        torch.randn = randn
    patched = [
        "flash_attention: torch SDPA in the inputs' precision (flash-attn absent; it computes in bf16)",
        "torch_gc: no-op (CUDA cache)",
        "get_video_codec: 'png' (ffprobe absent; AV1 inputs only)",
        "ASPECT_RATIO_627: the tiny table",
        "inspect.ArgSpec: imported unused, absent from Python 3.11",
        "torch.cuda.current_device: 0 while wan.multitalk imports (T5EncoderModel's default argument)",
    ]
    return video, rec, {"stand_ins": stood_in, "patched": patched, "weights": weights, "official_tables": tables}


def save(out: Path, video: torch.Tensor, rec: Recorder, meta: dict) -> None:
    from safetensors.torch import save_file

    embedding = torch.load(meta.pop("embedding_path"))
    tensors = {
        "portrait": torch.from_numpy(ref.portrait()),
        "speech": torch.from_numpy(ref.speech()),
        "clip_input": rec.clip_inputs[0].float(),
        "audio_embedding_head": embedding[..., :16].float().contiguous(),
        "audio_embedding_norms": embedding.float().norm(dim=-1),
        "video": video.to(torch.float16),
    }
    for i, (noise, motion, latent) in enumerate(zip(rec.noise, rec.motion, rec.latents, strict=True)):
        tensors |= {f"noise_{i}": noise, f"motion_latents_{i}": motion, f"latents_{i}": latent}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(out),
        metadata={"reference": json.dumps(meta, separators=(",", ":"))},
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {len(rec.latents)} windows, video {tuple(video.shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="a checkout of MeiGen-AI/InfiniteTalk")
    parser.add_argument("--commit", default="unknown", help="the checkout's commit, for the record")
    parser.add_argument(
        "--transformers4",
        type=Path,
        default=ROOT / "third_party" / "transformers4",
        help="a folder with transformers 4.x (pip install --target), for the audio stage",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ref.REFERENCE_FILE)
    parser.add_argument("--stage", choices=("all", "audio"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkout = args.official.resolve()
    if args.stage == "audio":
        return audio_stage(checkout, args.work)
    if not (args.transformers4 / "transformers").is_dir():
        sys.exit(
            f"{args.transformers4} has no transformers 4: pip install --target {args.transformers4} --no-deps "
            "transformers==4.49.0 huggingface_hub==0.29.3 tokenizers==0.21.1"
        )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(args.transformers4.resolve()), str(ROOT)]))
        subprocess.run(
            [sys.executable, __file__, str(checkout), "--stage", "audio", "--work", str(work)], check=True, env=env
        )
        from PIL import Image

        portrait_path = work / "portrait.png"
        Image.fromarray(ref.portrait()).save(portrait_path)
        torch.manual_seed(0)
        video, rec, meta = generation_stage(checkout, work, portrait_path)
        audio = json.loads((work / "audio_stage.json").read_text())
        meta["weights"]["wav2vec2"] = audio.pop("wav2vec2_weights")
        meta["stand_ins"] = sorted(set(meta["stand_ins"]) | set(audio.pop("stand_ins")))
        meta |= {
            "official_code": f"MeiGen-AI/InfiniteTalk {args.commit}",
            "command": " ".join(sys.argv),
            "date": date.today().isoformat(),
            "torch": torch.__version__,
            "audio_stage": audio,
            "config": {
                "dit": ref.DIT,
                "vae_dim": ref.VAE_DIM,
                "wav2vec2": ref.WAV2VEC2,
                "buckets": ref.BUCKETS,
                "official": ref.OFFICIAL,
                "frames": ref.FRAMES,
                "fps": ref.FPS,
                "prompt": ref.PROMPT,
                "negative_prompt": ref.NEGATIVE_PROMPT,
            },
            "given": {
                "clip_features": ref.checksum(ref.clip_features()),
                "text": {p: ref.checksum(ref.text_features(p)) for p in ref.PROMPT_TOKENS},
            },
            "embedding_path": str(work / "audio_embedding.pt"),
        }
        save(args.out, video, rec, meta)


if __name__ == "__main__":
    main()
