"""Flow-matching sampling for InfiniteTalk: the schedulers named by `sampling_scheduler`, the shift, and guidance.

The model predicts the flow velocity v = noise - clean at noise level sigma (x_sigma = (1 - sigma) clean +
sigma noise); sampling goes from sigma = 1 (pure noise) to 0. Every scheduler's sigmas are shifted as
sigma' = shift sigma / (1 + (shift - 1) sigma), which spends more steps at high noise (`sampling_shift`: 11 by
default, as the seed's ComfyUI setup samples; the official 40-step recipe uses 7 at 480p and 11 at 720p). The model's
timestep is 1000 sigma'.

Schedulers (diffusers' classes, fed the sigmas below, which makes them reproduce the reference implementations
exactly: checked step by step against Wan's own FlowUniPC / FlowDPMSolver classes, difference 0):
- `euler`: the official InfiniteTalk sampler: sigmas = shift(linspace(1, 0.001, steps)) then 0, and
  x += (sigma_next - sigma) v (diffusers' FlowMatchEulerDiscreteScheduler).
- `unipc`: flow-matching UniPC, 2nd order, bh2 (diffusers' UniPCMultistepScheduler with flow sigmas), on
  ComfyUI-WanVideoWrapper's grid: shift(linspace(s_max, 0, steps + 1)) without the final 0, then 0, where s_max =
  shift(0.999) (its scheduler is built with the shift and shifts again in set_timesteps).
- `dpm++_sde`: WanVideoWrapper's name for flow-matching DPM-Solver++ in its SDE variant, 2nd order midpoint
  (diffusers' DPMSolverMultistepScheduler, algorithm sde-dpmsolver++, flow prediction) on the same grid; it draws
  fresh noise every step from the sampler's generator.

Guidance (official `generate_infinitetalk`): with text scale s_t and audio scale s_a,
  v = v(no text, no audio) + s_t (v(cond) - v(no text)) + s_a (v(no text) - v(no text, no audio)),
"no text" being the negative prompt and "no audio" zero audio features. A scale of 1 makes its difference term
collapse, so its extra forward pass is skipped: s_t = 1 -> v(no audio) + s_a (v(cond) - v(no audio)) (2 passes, as
the official code does); s_a = 1 -> v(no text) + s_t (v(cond) - v(no text)) (2 passes; the official code runs the
third pass anyway, with the same result); both 1 -> v(cond) (1 pass, the distillation LoRA's setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SCHEDULERS = ("euler", "unipc", "dpm++_sde")
TRAIN_STEPS = 1000

# Which conditions each forward pass keeps: (text prompt, audio)
PASSES = {"cond": (True, True), "no_text": (False, True), "no_audio": (True, False), "no_text_no_audio": (False, False)}


def shifted(sigma: np.ndarray | float, shift: float) -> np.ndarray:
    return shift * np.asarray(sigma, dtype=np.float64) / (1 + (shift - 1) * np.asarray(sigma, dtype=np.float64))


def sigma_schedule(name: str, steps: int, shift: float) -> np.ndarray:
    """The `steps` noise levels the model is evaluated at (the final 0 excluded)."""
    if name == "euler":
        return shifted(np.linspace(1.0, 1.0 / TRAIN_STEPS, steps), shift)
    if name in ("unipc", "dpm++_sde"):
        start = float(shifted(1.0 - 1.0 / TRAIN_STEPS, shift))
        return shifted(np.linspace(start, 0.0, steps + 1)[:-1], shift)
    raise ValueError(f"unknown sampling_scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")


class FlowSampler:
    """One window's scheduler: `timesteps` to evaluate the model at, `step` to advance the latent."""

    def __init__(self, name: str, steps: int, shift: float):
        from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

        sigmas = sigma_schedule(name, steps, shift)
        self.name = name
        self.scheduler: Any  # one of diffusers' three schedulers (no common typed base)
        if name == "euler":
            self.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # sigmas come shifted
            self.scheduler.set_timesteps(sigmas=sigmas.astype(np.float32).tolist())
        elif name == "unipc":
            self.scheduler = UniPCMultistepScheduler(
                use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0, solver_order=2
            )
            self.scheduler.set_timesteps(sigmas=sigmas.astype(np.float32))
        else:
            self.scheduler = DPMSolverMultistepScheduler(
                use_flow_sigmas=True,
                prediction_type="flow_prediction",
                flow_shift=1.0,
                algorithm_type="sde-dpmsolver++",
                solver_order=2,
            )
            self.scheduler.set_timesteps(steps)
            # its set_timesteps takes no sigmas: replace its grid (same length) with this one
            self.scheduler.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
            self.scheduler.timesteps = torch.from_numpy((sigmas * TRAIN_STEPS).astype(np.int64))
        # Index steps by count, not by looking the timestep up: integer timesteps can repeat near sigma = 1.
        self.scheduler.set_begin_index(0)

    @property
    def timesteps(self) -> list[float]:
        return [float(t) for t in self.scheduler.timesteps]

    @property
    def sigmas(self) -> list[float]:
        return [float(s) for s in self.scheduler.sigmas]

    def step(
        self, velocity: torch.Tensor, latent: torch.Tensor, index: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        kwargs = {} if self.name == "unipc" else {"generator": generator}
        t = self.scheduler.timesteps[index]
        return self.scheduler.step(velocity, t, latent, return_dict=False, **kwargs)[0]


@dataclass(frozen=True)
class Guidance:
    text_scale: float = 1.0
    audio_scale: float = 1.0

    @property
    def passes(self) -> tuple[str, ...]:
        text, audio = not math.isclose(self.text_scale, 1.0), not math.isclose(self.audio_scale, 1.0)
        if text and audio:
            return "cond", "no_text", "no_text_no_audio"
        if text:
            return "cond", "no_text"
        if audio:
            return "cond", "no_audio"
        return ("cond",)

    def combine(self, v: dict[str, torch.Tensor]) -> torch.Tensor:
        t, a = self.text_scale, self.audio_scale
        if "no_text_no_audio" in v:
            return v["no_text_no_audio"] + t * (v["cond"] - v["no_text"]) + a * (v["no_text"] - v["no_text_no_audio"])
        if "no_text" in v:
            return v["no_text"] + t * (v["cond"] - v["no_text"])
        if "no_audio" in v:
            return v["no_audio"] + a * (v["cond"] - v["no_audio"])
        return v["cond"]


Predict = Callable[[str, torch.Tensor, float], torch.Tensor]  # (pass name, latent, timestep) -> velocity


def denoise(
    latent: torch.Tensor,
    sampler: FlowSampler,
    guidance: Guidance,
    predict: Predict,
    pin: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    on_step: Callable[[int, int], None] = lambda step, steps: None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the sampler from `latent` (noise) to sigma 0. `pin` rewrites the latent before and after every step
    (InfiniteTalk writes the clean motion-frame latents over the first frames); `on_step(done, total)` reports."""
    timesteps = sampler.timesteps
    for i, t in enumerate(timesteps):
        latent = pin(latent)
        velocity = guidance.combine({name: predict(name, latent, t) for name in guidance.passes})
        latent = pin(sampler.step(velocity, latent, i, generator))
        on_step(i + 1, len(timesteps))
    return latent
