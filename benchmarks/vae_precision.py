"""The Wan 2.1 VAE in bfloat16 against float32 on InfiniteTalk's motion-frame round trip, window after window.

Each InfiniteTalk window re-encodes the last `motion_frame` frames the previous window decoded (pipeline.py), so VAE
rounding can accumulate over a long video. This runs that round trip alone for `--windows` windows in both
precisions from the same start (a real photograph, scikit-image's astronaut, slowly panned): x -> encode -> decode
-> x' -> encode -> ..., and reports per window how far the bfloat16 chain is from the float32 one (latents: relative
L2; frames: 8-bit levels and PSNR), how much of that one bfloat16 pass adds on its own, and the time of one window's
VAE work (motion encode + 81-frame decode) in each precision.

    python benchmarks/vae_precision.py --out benchmarks/results/vae_precision_gpu.json        (GPU, full size)
    python benchmarks/vae_precision.py --device cpu --base-dim 96 --size 64x64 --out ...     (CPU: code path)

Weights: `--vae FILE` (a Wan 2.1 VAE file, as the backend loads it) or random (diffusers' default initialisation,
seeded). A random VAE is not an autoencoder (x' is nothing like x), so its figures bound how bfloat16 rounding
propagates through these layers, not the reconstruction quality; the decision in docs/infinitetalk-notes.md says
which figures it rests on.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from machine import machine  # noqa: E402

from spinbot.backends.talk.infinitetalk.vae import WanVAE, load_vae  # noqa: E402

WINDOW_FRAMES = 81


def random_vae(base_dim: int, device: torch.device, seed: int = 0) -> WanVAE:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return WanVAE(AutoencoderKLWan(base_dim=base_dim, z_dim=16)).to(device).eval().requires_grad_(False)


def start_frames(width: int, height: int, frames: int, device: torch.device) -> torch.Tensor:
    """[1, 3, frames, H, W] in [-1, 1]: the astronaut photograph, panned one pixel a frame."""
    import cv2
    from skimage import data

    image = data.astronaut()[40:440, 60:460]  # the face and shoulders
    big = cv2.resize(image, (width + frames, height + frames), interpolation=cv2.INTER_AREA)
    clip = np.stack([big[i : i + height, i : i + width] for i in range(frames)])  # [T, H, W, 3]
    video = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    return video.to(device)


def levels(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Frame difference in 8-bit levels (frames in [-1, 1]) and PSNR."""
    diff = (a.float() - b.float()).abs() * 127.5
    mse = float((diff**2).mean())
    return {
        "max_levels": round(float(diff.max()), 3),
        "mean_levels": round(float(diff.mean()), 4),
        "psnr_db": round(float(10 * np.log10(255.0**2 / mse)), 2) if mse > 0 else float("inf"),
    }


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def round_trips(full: WanVAE, half: WanVAE, start: torch.Tensor, windows: int) -> list[dict]:
    x32 = x16 = start
    rows = []
    for k in range(windows):
        z32, z16 = full.encode(x32), half.encode(x16)
        y32, y16 = full.decode(z32), half.decode(z16)
        one_pass = half.decode(half.encode(x32))  # bfloat16 once, from the float32 chain's input
        rows.append(
            {
                "window": k + 1,
                "latents_rel": round(relative(z16, z32), 6),
                "frames": levels(y16, y32),
                "one_bf16_pass": levels(one_pass, y32),
                "saturated_fraction": round(float((y32.abs() > 0.999).float().mean()), 4),
            }
        )
        print(rows[-1], flush=True)
        x32, x16 = y32, y16
    return rows


@torch.inference_mode()
def window_seconds(vae: WanVAE, width: int, height: int, motion: int, device: torch.device, repeats: int) -> float:
    """One window's VAE work: encode the motion frames, decode the 81-frame window."""
    x = torch.zeros(1, 3, motion, height, width, device=device)
    z = torch.zeros(1, 16, 1 + (WINDOW_FRAMES - 1) // 4, height // 8, width // 8, device=device)
    vae.decode(vae.encode(x)[:, :, :2])  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        vae.encode(x)
        vae.decode(z)
        sync(device)
        times.append(time.perf_counter() - started)
    return round(min(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vae", type=Path, help="a Wan 2.1 VAE file; random weights without it")
    parser.add_argument("--base-dim", type=int, default=96, help="random VAE width (96: Wan 2.1's)")
    parser.add_argument("--size", default="832x480", help="WIDTHxHEIGHT, multiples of 16")
    parser.add_argument("--motion-frames", type=int, default=25)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per precision (0: no timing)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.split("x"))
    full = load_vae(args.vae, torch.float32, device) if args.vae else random_vae(args.base_dim, device)
    half = WanVAE(copy.deepcopy(full.autoencoder).to(torch.bfloat16)).to(device)  # the same weights, rounded
    out = {
        "benchmark": "Wan 2.1 VAE, bfloat16 against float32, motion-frame round trips",
        "command": " ".join(["python", *sys.argv]),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "device": str(device),
        "weights": str(args.vae) if args.vae else f"random (diffusers default init, seed 0, base_dim {args.base_dim})",
        "size": [width, height],
        "motion_frames": args.motion_frames,
        "windows": args.windows,
    }
    start = start_frames(width, height, args.motion_frames, device)
    out["round_trips"] = round_trips(full, half, start, args.windows)
    if args.repeats:
        out["window_vae_seconds"] = {
            "float32": window_seconds(full, width, height, args.motion_frames, device, args.repeats),
            "bfloat16": window_seconds(half, width, height, args.motion_frames, device, args.repeats),
        }
        if device.type == "cuda":
            out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
