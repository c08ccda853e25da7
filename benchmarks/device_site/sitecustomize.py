"""Imported at start-up by every Python process of a device run whose PYTHONPATH holds this folder (the e2e
harness puts it there for the `spinbot` worker and run processes it starts).

The GPU machine lacks a few packages that f5-tts imports at import time but that no inference path calls (its
trainer's wandb and datasets, the hub download's cached_path); carrying them would not fit one call's 64 MiB. They
get the same empty stand-ins as benchmarks/f5tts_gpu.py, and the harness records which in its result. transformers
and accelerate are imported first so that their probes for optional packages see the machine as it is.
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stand_ins import importable, stand_in

for _probe in ("transformers", "accelerate"):
    try:
        importlib.import_module(_probe)
    except ImportError:
        pass
STAND_INS = {
    "wandb": {},
    "datasets": {"Dataset": type("Dataset", (), {}), "load_from_disk": None},
    "cached_path": {"cached_path": None},
}
USED = [name for name in STAND_INS if not importable(name)]
for _name in USED:
    stand_in(_name, **STAND_INS[_name])
os.environ["SPINBOT_DEVICE_STAND_INS"] = ",".join(USED)
