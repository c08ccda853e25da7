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
