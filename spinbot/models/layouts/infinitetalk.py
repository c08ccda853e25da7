"""infinite_talk (native): the key layout each file InfiniteTalkParams names must have (the files themselves,
torch-free: spinbot/models/needs.py; `files` here is that list, for layout_for(task).files).

Every layout is derived from the architecture the backend builds, through the loaders' own code: the transformer's
config read from the files' shapes (loading.transformer_config) and InfiniteTalkModel built on the meta device; the
VAE, UMT5 and CLIP keys renamed by the loaders' own functions (running on meta tensors made from the headers) and
compared with diffusers' / transformers' modules built on the meta device; the LoRA's targets checked against the
transformer's parameters; wav2vec2 against the folder's config.json. No tensor data is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from spinbot.backends.talk.infinitetalk.files import FOLDERS, TOKENIZER_FILE, WAV2VEC_WEIGHTS
from spinbot.errors import first_line
from spinbot.models.compare import Problem, compare_layout, guarded, module_layout, unreadable_safetensors
from spinbot.models.headers import FLOAT_DTYPES, FP8_DTYPES, TensorSpec, as_meta, read_header
from spinbot.models.needs import infinitetalk_files as files

TALK_DTYPES = FLOAT_DTYPES | FP8_DTYPES  # float8 weights are upcast (and scaled) as read
ADAPTER_KEYS = ("audio_proj.", ".audio_cross_attn.", ".norm_x.")  # what the InfiniteTalk file holds
WAV2VEC_PREFIX = "wav2vec2."  # Wav2Vec2ForPreTraining checkpoints (TencentGameMate's) nest the model under it


def check(params: Any, models_dir: Path) -> list[Problem]:
    """Every missing file, then the layout of every file whose group (what one loader reads) is complete."""
    needed = files(params, models_dir)
    problems = [
        Problem(f.path, f"missing ({f.param}){f.why_missing()}") for f in needed if f.required and not f.present
    ]
    paths = {f.param: f.path for f in needed}
    lora = paths.get("lora_model")
    folder = models_dir / FOLDERS["wav2vec_model"][0] / params.wav2vec_model
    groups = [
        (
            ["wan_video_model", "infinitetalk_model", "lora_model"],
            paths["wan_video_model"],
            lambda: transformer_problems(paths["wan_video_model"], paths["infinitetalk_model"], lora),
        ),
        (["vae_model"], paths["vae_model"], lambda: vae_problems(paths["vae_model"])),
        (
            ["t5_text_encoder_model", "t5_text_encoder_model (tokenizer)"],
            paths["t5_text_encoder_model"],
            lambda: umt5_problems(paths["t5_text_encoder_model"]),
        ),
        (["clip_vision_model"], paths["clip_vision_model"], lambda: clip_problems(paths["clip_vision_model"])),
        (["wav2vec_model"], folder, lambda: wav2vec_problems(folder)),
    ]
    for params_read, path, run in groups:
        group = [f for f in needed if f.param in params_read]
        if all(f.present or not f.required for f in group):
            problems += guarded(path, run)
        else:
            problems += unreadable_safetensors([f.path for f in group if f.present])
    return problems


# ---- the transformer and its LoRA -------------------------------------------------------------------------------


def transformer_layout(config) -> dict[str, TensorSpec]:
    """The transformer's keys and shapes for a config (the official names, as the Wan + InfiniteTalk files hold
    them)."""
    from spinbot.backends.talk.infinitetalk.model import InfiniteTalkModel

    with torch.device("meta"):
        return module_layout(InfiniteTalkModel(config))


def transformer_problems(wan: Path, talk: Path, lora: Path | None) -> list[Problem]:
    from spinbot.backends.talk.infinitetalk.loading import file_prefixes, transformer_config
    from spinbot.backends.talk.infinitetalk.transformer_checkpoint import index_checkpoints

    paths = [wan, talk]
    try:
        prefixes = file_prefixes(paths)
        config = transformer_config(paths, prefixes)
        index = index_checkpoints(paths, prefixes)
    except Exception as err:  # noqa: BLE001 - CheckpointError (unreadable header) or a config the model refuses
        return [Problem(wan, str(err))]
    expected = transformer_layout(config)
    found = {k: TensorSpec(e.shape, e.dtype) for k, e in index.items()}

    def path_of(key: str) -> Path:
        return index[key].path if key in index else (talk if any(a in key for a in ADAPTER_KEYS) else wan)

    problems = compare_layout(wan, expected, found, dtypes=TALK_DTYPES, path_of=path_of)
    if lora is not None:
        problems += lora_problems(lora, expected)
    return problems


def lora_problems(path: Path, model: dict[str, TensorSpec]) -> list[Problem]:
    """Each LoRA key must be a kind the merge knows and target a parameter of the model with a matching size."""
    from spinbot.backends.talk.infinitetalk.lora import DIFFS, LOW_RANK, PREFIXES, split_key

    header = read_header(path)
    problems: list[Problem] = []
    low_rank: dict[str, dict[str, Any]] = {}
    for key, spec in header.items():
        module, kind = split_key(next((key[len(p) :] for p in PREFIXES if key.startswith(p)), key))
        if kind in DIFFS:
            problems += _target_problems(path, key, f"{module}.{DIFFS[kind]}", spec.shape, model)
        elif kind in LOW_RANK:
            low_rank.setdefault(module, {})[LOW_RANK[kind]] = (key, spec.shape)
        else:
            problems.append(
                Problem(
                    path, f"'{key}' is not a LoRA key the merge knows (lora_down/lora_up/alpha, diff, diff_b, diff_m)"
                )
            )
    for module, parts in sorted(low_rank.items()):
        if "down" not in parts or "up" not in parts:
            half = "lora_up" if "up" not in parts else "lora_down"
            problems.append(Problem(path, f"missing key '{module}.{half}.weight'"))
            continue
        (key, down), (_, up) = parts["down"], parts["up"]
        delta = (up[0], int(torch.Size(down[1:]).numel()))
        problems += _target_problems(path, key, f"{module}.weight", delta, model)
    return problems


def _target_problems(
    path: Path, key: str, target: str, shape: tuple[int, ...], model: dict[str, TensorSpec]
) -> list[Problem]:
    if target not in model:
        return [Problem(path, f"'{key}' targets '{target}', which the model does not have")]
    if torch.Size(shape).numel() != torch.Size(model[target].shape).numel():
        return [Problem(path, f"'{key}' gives {list(shape)}, the model's parameter is {list(model[target].shape)}")]
    return []


# ---- encoders and VAE ---------------------------------------------------------------------------------------------


def vae_problems(path: Path) -> list[Problem]:
    from diffusers import AutoencoderKLWan

    from spinbot.backends.talk.infinitetalk.vae import WanVAEConfig, to_diffusers_names, wan_name
    from spinbot.backends.talk.infinitetalk.weights import strip_prefix

    original = strip_prefix(as_meta(read_header(path)), ("model.", "vae.", "first_stage_model."))
    state = to_diffusers_names(original)
    config = WanVAEConfig.from_state(state)
    with torch.device("meta"):
        expected = module_layout(AutoencoderKLWan(base_dim=config.base_dim, z_dim=config.z_dim))
    return compare_layout(
        path, expected, _specs(state), unexpected_ok=True, file_name=lambda k: k if state is original else wan_name(k)
    )


def umt5_problems(path: Path) -> list[Problem]:
    from transformers import UMT5EncoderModel

    from spinbot.backends.talk.infinitetalk.t5 import UMT5Size, hf_names, hf_to_wan
    from spinbot.backends.talk.infinitetalk.weights import strip_prefix, uninitialised

    original = strip_prefix(as_meta(read_header(path)), ("model.",))
    state = hf_names(original)
    with torch.device("meta"), uninitialised(torch.float32):
        expected = module_layout(UMT5EncoderModel(UMT5Size.from_state(state).config()))
    problems = compare_layout(
        path, expected, _specs(state), unexpected_ok=True, file_name=lambda k: k if state is original else hf_to_wan(k)
    )
    return problems + _tokenizer_problems(path.parent / TOKENIZER_FILE)


def _tokenizer_problems(path: Path) -> list[Problem]:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises its own Exception type
        return [Problem(path, f"not a tokenizers file: {first_line(err)}")]
    return []


def clip_problems(path: Path) -> list[Problem]:
    from transformers import CLIPVisionModel

    from spinbot.backends.talk.infinitetalk.clip import ClipVisionSize
    from spinbot.backends.talk.infinitetalk.weights import strip_prefix

    state = strip_prefix(as_meta(read_header(path)), ("clip_vision.",))
    state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    with torch.device("meta"):
        model = CLIPVisionModel(ClipVisionSize.from_state(state).config())
    expected = module_layout(model)
    if any(k.startswith("vision_model.") for k in expected):  # transformers 4 nests the tower
        state = {f"vision_model.{k}": v for k, v in state.items()}
    return compare_layout(
        path,
        expected,
        _specs(state),
        unexpected_ok=True,
        file_name=lambda k: k if k.startswith("vision_model.") else f"vision_model.{k}",
    )


def wav2vec_problems(folder: Path) -> list[Problem]:
    """As transformers' from_pretrained loads it: the `wav2vec2.` prefix dropped, weight-norm names of either era,
    extra keys (pre-training heads) ignored, a missing key an error (the loader refuses models left random)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from spinbot.backends.talk.infinitetalk.audio import UNUSED_KEYS

    try:
        config = Wav2Vec2Config.from_dict(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError) as err:
        return [Problem(folder / "config.json", f"not a wav2vec2 config: {first_line(err)}")]
    weights = next(folder / w for w in WAV2VEC_WEIGHTS if (folder / w).is_file())
    with torch.device("meta"):
        expected = module_layout(Wav2Vec2Model(config))
    expected = {k: v for k, v in expected.items() if not k.endswith(UNUSED_KEYS)}
    found = {_weight_norm_name(k.removeprefix(WAV2VEC_PREFIX)): v for k, v in read_header(weights).items()}
    return compare_layout(weights, expected, found, unexpected_ok=True)


def _weight_norm_name(key: str) -> str:
    """Old weight-norm names (weight_g, weight_v) -> torch's parametrization names, as transformers renames them."""
    for old, new in (
        ("weight_g", "parametrizations.weight.original0"),
        ("weight_v", "parametrizations.weight.original1"),
    ):
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def _specs(state: dict[str, torch.Tensor]) -> dict[str, TensorSpec]:
    from spinbot.models.headers import torch_dtype_name

    return {k: TensorSpec(tuple(v.shape), torch_dtype_name(v.dtype)) for k, v in state.items()}
