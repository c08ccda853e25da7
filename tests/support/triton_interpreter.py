"""Triton kernels run by Triton's CPU interpreter (CI has no GPU), in a subprocess: Triton reads TRITON_INTERPRET
when it is imported, and the test process has imported it already."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[2]


def run_interpreted(script: str, timeout: float = 600) -> str:
    """The last line `script` printed, run with TRITON_INTERPRET=1 from the repository root (so it can import
    `spinbot` and `tests`); a non-zero exit fails the test with the end of its stderr."""
    require_module("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]
