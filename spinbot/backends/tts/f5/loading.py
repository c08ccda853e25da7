"""Find the F5-TTS files in SPINBOT_MODELS_DIR and load them, kept in the worker's model cache between jobs.

Layout (docs/models.md), for the `model` param NAME (default F5TTS_v1_Base):
  F5-TTS/NAME/model_<step>.safetensors   (or .pt; the highest step wins) the official checkpoint
  F5-TTS/NAME/vocab.txt                  the tokenizer's vocabulary
  F5-TTS/NAME/config.yaml                optional: the package's config format (model.backbone, model.arch,
                                         model.mel_spec); without it, the package's own f5_tts/configs/NAME.yaml
  F5-TTS/vocos-mel-24khz/config.yaml + pytorch_model.bin   the Vocos vocoder (charactr/vocos-mel-24khz)
Every file is checked before any is read; nothing is fetched from a hub.

The model is built from the package's own classes (f5_tts.model.CFM around its backbone, e.g. DiT) and loaded the
way f5_tts.infer.utils_infer.load_checkpoint loads it (EMA weights, `ema_model.` prefix, .pt or .safetensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any, TypeVar

import torch

from spinbot.backends.fp8 import F5_LINEARS, use_fp8
from spinbot.backends.tts.f5.files import FOLDER, VOCODER, latest_checkpoint
from spinbot.backends.tts.f5.packed import attention_kernel, use_packing
from spinbot.errors import BackendUnavailable, first_line

T = TypeVar("T")

# Keys of old checkpoints that the current MelSpec no longer has (utils_infer.load_checkpoint drops them too).
STALE_KEYS = ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")


@dataclass(frozen=True)
class F5Files:
    checkpoint: Path
    vocab: Path
    config: Path  # beside the checkpoint, or the package's own
    vocoder: Path  # folder with config.yaml and pytorch_model.bin


@dataclass
class F5Models:
    cfm: Any  # f5_tts.model.CFM: transformer in `dtype`, mel spectrogram in float32
    vocoder: Any  # vocos.Vocos, float32
    device: torch.device
    dtype: torch.dtype
    files: F5Files
    mel: dict[str, Any]  # the config's mel_spec section (sample rate, hop length, ...)


def _missing(what: str, name: str, folder: Path, models_dir: Path) -> BackendUnavailable:
    return BackendUnavailable(
        f"f5_to_tts native: {what} {name} not found in {folder} (SPINBOT_MODELS_DIR={models_dir})"
    )


def find_checkpoint(folder: Path, models_dir: Path) -> Path:
    """model_<step>.safetensors or .pt with the highest step (safetensors first on a tie)."""
    found = latest_checkpoint(folder)
    if found is None:
        raise _missing("checkpoint", "model_*.safetensors (or .pt)", folder, models_dir)
    return found


def resolve_files(model: str, models_dir: Path) -> F5Files:
    folder = models_dir / FOLDER / model
    checkpoint = find_checkpoint(folder, models_dir)
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise _missing("vocabulary", "vocab.txt", folder, models_dir)
    config = folder / "config.yaml"
    if not config.is_file():
        config = Path(str(package_files("f5_tts").joinpath(f"configs/{model}.yaml")))
        if not config.is_file():
            raise BackendUnavailable(
                f"f5_to_tts native: no config.yaml in {folder} and f5-tts has no built-in config for model '{model}'"
            )
    vocoder = models_dir / FOLDER / VOCODER
    for name in ("config.yaml", "pytorch_model.bin"):
        if not (vocoder / name).is_file():
            raise _missing("vocoder file", name, vocoder, models_dir)
    return F5Files(checkpoint, vocab, config, vocoder)


def model_config(path: Path) -> dict[str, Any]:
    """The `model` section of an f5-tts config (backbone, arch, mel_spec), as plain dicts."""
    import yaml

    try:
        whole = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise BackendUnavailable(f"f5_to_tts native: {path} is not YAML ({first_line(err)})") from None
    config = (whole.get("model") if isinstance(whole, dict) else None) or {}
    if not isinstance(config, dict) or not isinstance(config.get("mel_spec", {}), dict):
        raise BackendUnavailable(f"f5_to_tts native: {path} is not an f5-tts config (its model section is no mapping)")
    missing = [k for k in ("backbone", "arch", "mel_spec") if k not in config]
    if missing:
        raise BackendUnavailable(f"f5_to_tts native: {path} lacks model.{', model.'.join(missing)}")
    if config["mel_spec"].get("mel_spec_type", "vocos") != "vocos":
        raise BackendUnavailable(
            f"f5_to_tts native: {path} wants the {config['mel_spec']['mel_spec_type']} vocoder; only Vocos is supported"
        )
    return config


def import_f5_model() -> Any:
    """f5_tts.model, imported so that flash-attn-4 (the fa4 extra) does not break it. f5-tts imports FlashAttention
    2's flash_attn_func whenever a `flash_attn` package exists, and flash-attn-4 installs only flash_attn.cute, as a
    namespace package (no __init__, so no origin). There, f5-tts's probe is told that there is no flash_attn for
    the length of its import; its flash_attn backend is never used here (packed.py calls the kernels itself)."""
    import importlib.util
    import sys
    from unittest import mock

    if "f5_tts.model" in sys.modules:
        return sys.modules["f5_tts.model"]
    spec = importlib.util.find_spec("flash_attn")
    if spec is None or spec.origin is not None:
        return importlib.import_module("f5_tts.model")
    find_spec = importlib.util.find_spec

    def without_flash_attn(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "flash_attn" else find_spec(name, *args, **kwargs)

    with mock.patch("importlib.util.find_spec", without_flash_attn):
        return importlib.import_module("f5_tts.model")


def compute_dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU (its half-precision kernels are slow); float16 on CUDA, as the package itself does.
    Not bfloat16: CFM.sample builds its time grid in the conditioning's dtype, and bfloat16's 8-bit mantissa
    merges neighbouring steps near t = 1 (torchdiffeq then refuses the grid: "t must be strictly increasing")."""
    return torch.float16 if device.type == "cuda" else torch.float32


@dataclass(frozen=True)
class Speedups:
    """CUDA-only options (SPINBOT_TTS_COMPILE, SPINBOT_TTS_FP8), part of the cached model's key.

    compile: torch.compile the packed DiT block (packed.py). The blocks are small (dim 1024) and many (22 x 32
    steps), so the eager model is bound by kernel launches; Inductor fuses the element-wise work around each matmul
    (the per-block compile of the padded model took the 30 s benchmark from 1.63 to 0.88 s on the H100).
    fp8: e4m3 matmuls in the blocks (spinbot.backends.fp8); f5tts_gpu.py times it as ours_fp8.
    attention: the packed attention's kernel on CUDA (auto | flash2 | flash4; packed.attention_kernel)."""

    compile: bool = True
    fp8: bool = False
    attention: str = "auto"


def read_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The EMA weights without their `ema_model.` prefix, as utils_infer.load_checkpoint reads them."""
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        return ema_weights(load_file(str(checkpoint), device="cpu"))
    return ema_weights(torch.load(checkpoint, map_location="cpu", weights_only=True))


def ema_weights(raw: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's top level -> the CFM's state dict: the `.pt`'s `ema_model_state_dict` unwrapped, the
    `ema_model.` prefix and the EMA wrapper's counters dropped, stale mel-spectrogram buffers dropped. Works on
    tensors and on header entries alike (spinbot.models checks the layout through it)."""
    ema = raw.get("ema_model_state_dict", raw)
    state = {k.replace("ema_model.", "", 1): v for k, v in ema.items() if k not in ("initted", "step")}
    for key in STALE_KEYS:
        state.pop(key, None)
    return state


def build_cfm(
    files: F5Files, device: torch.device, dtype: torch.dtype, speedups: Speedups
) -> tuple[Any, dict[str, Any]]:
    cfm, mel = new_cfm(files)
    try:
        cfm.load_state_dict(read_state(files.checkpoint))
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise BackendUnavailable(f"f5_to_tts native: {files.checkpoint} does not fit {files.config}: {first}") from None
    # Only the transformer goes to half precision: the reference's mel spectrogram is computed in float32.
    cfm.transformer.to(device=device, dtype=dtype)
    cuda = device.type == "cuda"
    if cuda and speedups.fp8:
        use_fp8(cfm.transformer.transformer_blocks, F5_LINEARS)
    kernel = attention_kernel(speedups.attention, device, dtype)
    use_packing(cfm.transformer, compile=cuda and speedups.compile, kernel=kernel)  # no padding (packed.py)
    return cfm.to(device).eval(), mel


def new_cfm(files: F5Files) -> tuple[Any, dict[str, Any]]:
    """The CFM that the config and the vocabulary describe, freshly initialised on the default device (under
    torch.device("meta") it costs no memory: spinbot.models lays the checkpoint out against it)."""
    f5_model = import_f5_model()
    from f5_tts.model.utils import get_tokenizer

    config = model_config(files.config)
    backbone = getattr(f5_model, config["backbone"], None)
    if backbone is None:
        raise BackendUnavailable(
            f"f5_to_tts native: {files.config} names backbone {config['backbone']!r}, which f5_tts.model does not have"
        )
    vocab_char_map, vocab_size = get_tokenizer(str(files.vocab), "custom")
    mel = dict(config["mel_spec"])
    mel_kwargs = {
        k: mel[k]
        for k in ("n_fft", "hop_length", "win_length", "n_mel_channels", "target_sample_rate", "mel_spec_type")
    }
    transformer = backbone(**config["arch"], text_num_embeds=vocab_size, mel_dim=mel["n_mel_channels"])
    cfm = f5_model.CFM(
        transformer=transformer,
        mel_spec_kwargs=mel_kwargs,
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab_char_map,
    )
    return cfm, mel


def load_vocoder(folder: Path, device: torch.device) -> Any:
    """Vocos from config.yaml + pytorch_model.bin, the local branch of utils_infer.load_vocoder."""
    vocoder = vocos_from_config(folder / "config.yaml")
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    try:
        vocoder.load_state_dict(state)
    except RuntimeError as err:
        raise BackendUnavailable(
            f"f5_to_tts native: {folder / 'pytorch_model.bin'} does not fit {folder / 'config.yaml'}: {first_line(err)}"
        ) from None
    return vocoder.eval().to(device)


def vocos_from_config(path: Path) -> Any:
    """Vocos as its config.yaml describes it (weights not loaded); a file that is not such a config is one line."""
    from vocos import Vocos

    try:
        return Vocos.from_hparams(str(path))
    except Exception as err:  # noqa: BLE001 - a YAML error, a missing section, a class it cannot build: one line
        raise BackendUnavailable(
            f"f5_to_tts native: {path} is not a Vocos config ({type(err).__name__}: {first_line(err)})"
        ) from None


def cached(role: str, path: Path, tag: str, load: Callable[[], T], size: int | None = None) -> T:
    """The worker's model cache (shared with the other backends), keyed by the file, the role and everything that
    changes the loaded weights (device, dtype, vocabulary, config)."""
    from spinbot.worker.model_cache import get_model_cache

    return get_model_cache().get(path, f"f5tts-{role}:{tag}", load, size=size)


def load_models(model: str, models_dir: Path, device: torch.device, speedups: Speedups = Speedups()) -> F5Models:
    files = resolve_files(model, models_dir)
    dtype = compute_dtype(device)
    speedups = speedups if device.type == "cuda" else Speedups(compile=False)
    cfm, mel = cached(
        "cfm",
        files.checkpoint,
        f"{device}:{dtype}:{files.vocab}:{files.config}:{speedups}",
        lambda: build_cfm(files, device, dtype, speedups),
    )
    vocoder = cached("vocos", files.vocoder, f"{device}:float32", lambda: load_vocoder(files.vocoder, device))
    return F5Models(cfm, vocoder, device, dtype, files, mel)
