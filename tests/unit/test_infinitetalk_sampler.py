"""infinite_talk's sampling without a model: the guidance passes and their combination, the flow samplers'
schedules and steps against closed forms, and the audio windows each video frame reads (CPU, CI)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import in_ci

if in_ci():
    import torch  # CI installs the gpu extra: its absence is a failure there, not a skip
else:
    torch = pytest.importorskip("torch")

from spinbot.backends.talk.infinitetalk.audio import audio_windows
from spinbot.backends.talk.infinitetalk.sampler import FlowSampler, Guidance, denoise, shifted, sigma_schedule

# ---- sampler ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, audio, passes",
    [
        (5.0, 4.0, ("cond", "no_text", "no_text_no_audio")),  # the official defaults: 3 forward passes a step
        (1.0, 4.0, ("cond", "no_audio")),
        (5.0, 1.0, ("cond", "no_text")),
        (1.0, 1.0, ("cond",)),  # the distillation LoRA's setting
    ],
)
def test_guidance_runs_only_the_passes_its_scales_need(text, audio, passes):
    guidance = Guidance(text, audio)
    calls: list[str] = []

    def predict(name: str, latent: torch.Tensor, t: float) -> torch.Tensor:
        calls.append(name)
        return torch.zeros_like(latent)

    denoise(torch.randn(1, 4, 2, 2, 2), FlowSampler("euler", 3, 7.0), guidance, predict)
    assert guidance.passes == passes and calls == list(passes) * 3


def test_guidance_combines_as_the_official_code():
    v = {name: torch.full((2,), float(i + 1)) for i, name in enumerate(("cond", "no_text", "no_text_no_audio"))}
    official = v["no_text_no_audio"] + 5.0 * (v["cond"] - v["no_text"]) + 4.0 * (v["no_text"] - v["no_text_no_audio"])
    assert torch.equal(Guidance(5.0, 4.0).combine(v), official)
    two = {"cond": torch.tensor([3.0]), "no_audio": torch.tensor([1.0])}
    assert torch.equal(Guidance(1.0, 4.0).combine(two), torch.tensor([1.0 + 4.0 * 2.0]))


def test_euler_integrates_a_straight_flow_exactly():
    """x_sigma = (1 - sigma) x0 + sigma noise has velocity noise - x0 everywhere: Euler lands on x0 from noise."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 3, 2, 2, generator=g), torch.randn(1, 4, 3, 2, 2, generator=g)
    seen: list[float] = []

    def predict(name: str, latent: torch.Tensor, t: float) -> torch.Tensor:
        seen.append(t)
        return noise - x0

    out = denoise(noise.clone(), FlowSampler("euler", 6, 7.0), Guidance(), predict)
    assert torch.allclose(out, x0, atol=1e-6)
    sigmas = shifted(np.linspace(1.0, 0.001, 6), 7.0)  # official: linspace(1000, 1, steps), shifted
    assert np.allclose(seen, sigmas * 1000, rtol=1e-6)


def test_euler_steps_a_linear_field_by_the_sigma_differences():
    """dx/dsigma = x: each Euler step multiplies by 1 + (sigma_next - sigma)."""
    sampler = FlowSampler("euler", 4, 11.0)
    sigmas = np.append(shifted(np.linspace(1.0, 0.001, 4), 11.0), 0.0)
    out = denoise(torch.ones(1, 1, 1, 1, 1), sampler, Guidance(), lambda name, x, t: x)
    assert float(out) == pytest.approx(np.prod(1 + np.diff(sigmas)), rel=1e-6)


def test_schedules_and_shift():
    for name in ("unipc", "dpm++_sde"):
        sampler = FlowSampler(name, 4, 7.0)
        expected = shifted(np.linspace(float(shifted(0.999, 7.0)), 0.0, 5)[:-1], 7.0)
        assert np.allclose(sampler.sigmas[:-1], expected, rtol=1e-6) and sampler.sigmas[-1] == 0.0
        assert np.allclose(sampler.timesteps, expected * 1000, atol=1)  # integer timesteps, as Wan's classes
    with pytest.raises(ValueError, match="unknown sampling_scheduler 'heun'"):
        sigma_schedule("heun", 4, 7.0)


def test_sde_sampler_draws_its_noise_from_the_generator():
    def run(seed: int) -> torch.Tensor:
        return denoise(
            torch.ones(1, 2, 1, 2, 2),
            FlowSampler("dpm++_sde", 3, 7.0),
            Guidance(),
            lambda name, x, t: 0.5 * x,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


# ---- audio windows -------------------------------------------------------------------------------------------------


def test_audio_windows_clamp_at_the_start_and_reverse_past_the_end():
    embedding = torch.arange(6.0)[:, None, None]  # frame i holds i
    windows = audio_windows(embedding, start=0, length=2)[..., 0, 0]
    assert windows.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3]]
    tail = audio_windows(embedding, start=4, length=3)[..., 0, 0]
    assert tail.tolist() == [[2, 3, 4, 5, 5], [3, 4, 5, 5, 4], [4, 5, 5, 4, 3]]
