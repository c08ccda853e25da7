"""Stand-in modules for benchmark harnesses: code under test imports packages at module level that the device lacks
and that the measured path never calls (training loggers, sequence-parallel helpers). Each stand-in is an empty
module with a module spec (libraries that probe for optional packages read `__spec__`), registered in sys.modules
and attached to its parent package; every harness records which ones it used in its results."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def stand_in(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def absent(package: str):
    """A callable that says, when called, that the measured path reached a package that is only a stand-in."""

    def call(*args, **kwargs):
        raise RuntimeError(f"{package} is not installed here (a stand-in): this path needs the real package")

    return call


def sdpa_memory_efficient_attention(q, k, v, attn_bias=None, op=None):
    """xformers.ops.memory_efficient_attention ([B, M, H, K] layout) as PyTorch SDPA in the inputs' precision."""
    import torch.nn.functional as F

    if attn_bias is not None:
        raise NotImplementedError("block-diagonal bias (sequence parallel only)")
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


class EasyDict(dict):
    """easydict.EasyDict's behaviour that the official configs use: keys readable and settable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def infinitetalk_official() -> list[str]:
    """Stand-ins for what MeiGen-AI/InfiniteTalk imports at module level and a single-GPU (or CPU) run of
    `generate_infinitetalk` never calls (or calls only as noted); returns what was stood in, for the results."""
    import types

    quanto = absent("optimum-quanto")
    scenes = absent("scenedetect")
    packages = {  # top package -> (note, {module: attributes}), parents before children
        "xfuser": (
            "sequence-parallel queries answer one rank",
            {
                "xfuser": {},
                "xfuser.core": {},
                "xfuser.core.distributed": {
                    "get_sequence_parallel_rank": lambda: 0,
                    "get_sequence_parallel_world_size": lambda: 1,
                    "get_sp_group": lambda: None,
                },
            },
        ),
        "xformers": (
            "memory_efficient_attention = torch SDPA in the inputs' precision",
            {
                "xformers": {},
                "xformers.ops": {
                    "memory_efficient_attention": sdpa_memory_efficient_attention,
                    "fmha": types.SimpleNamespace(attn_bias=types.SimpleNamespace(BlockDiagonalMask=None)),
                },
            },
        ),
        "decord": (
            "video input only (the portrait is an image)",
            {"decord": {"VideoReader": absent("decord"), "cpu": absent("decord")}},
        ),
        "optimum": (
            "int8 / fp8 checkpoints only",
            {
                "optimum": {},
                "optimum.quanto": {"quantize": quanto, "freeze": quanto, "qint8": None, "requantize": quanto},
                "optimum.quanto.nn": {},
                "optimum.quanto.nn.qlinear": {"QLinear": type("QLinear", (), {})},
            },
        ),
        "ftfy": ("the UMT5 / CLIP tokenizers only", {"ftfy": {"fix_text": absent("ftfy")}}),
        "easydict": ("the configs' attribute dict", {"easydict": {"EasyDict": EasyDict}}),
        "kokoro": ("text-to-speech input only", {"kokoro": {"KPipeline": absent("kokoro")}}),
        "scenedetect": (
            "--scene_seg only",
            {
                "scenedetect": {
                    "SceneManager": scenes,
                    "open_video": scenes,
                    "ContentDetector": scenes,
                    "AdaptiveDetector": scenes,
                    "ThresholdDetector": scenes,
                }
            },
        ),
        "moviepy": ("--scene_seg only", {"moviepy": {}, "moviepy.editor": {}}),
    }
    added = []
    for package, (note, modules) in packages.items():
        if importable(package):
            continue
        for name, attrs in modules.items():
            stand_in(name, **attrs)
        added.append(f"{package}: {note}")
    return added
