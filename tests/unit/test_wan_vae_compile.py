"""The Wan VAE's compiled RMS norms (WanVAE.speed_up): one compiled function for every norm of the VAE, its graphs
shared across modules and kept past torch's recompile limit, with the eager numbers."""

from __future__ import annotations

from tests.conftest import require_module

torch = require_module("torch")
require_module("diffusers")

from torch._dynamo.utils import counters  # noqa: E402

from spinbot.backends.talk.infinitetalk.vae import WanVAE  # noqa: E402


def tiny_vae() -> WanVAE:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(2)
    return WanVAE(AutoencoderKLWan(base_dim=8, z_dim=16).eval())


CLIPS = [(5, 32, 32), (9, 48, 32), (1, 32, 48)]  # frames, height, width: a window, a longer one, a portrait


def round_trips(vae: WanVAE) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    clips = [torch.rand(1, 3, *shape, generator=generator) * 2 - 1 for shape in CLIPS]
    with torch.no_grad():
        return [vae.decode(vae.encode(clip)) for clip in clips]


def test_the_compiled_norms_keep_every_graph_past_the_recompile_limit_and_the_eager_numbers():
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    vae = tiny_vae()
    norms = sum(isinstance(module, WanRMS_norm) for module in vae.autoencoder.modules())
    eager = round_trips(vae)
    torch._dynamo.reset()
    counters.clear()
    vae.speed_up(channels_last=True, compile_norms=True, backend="eager")  # eager: dynamo's graphs, no kernels
    # A limit of 2 stands for the real VAE's many layouts passing torch's default of 8: on the H200 the norms
    # compiled per module ran out of it in the first window and the rest ran uncompiled.
    with torch._dynamo.config.patch(recompile_limit=2):
        compiled = round_trips(vae)
    graphs = counters["stats"]["unique_graphs"]
    assert 2 < graphs < norms  # shared by the modules, and not cut off at the limit
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
