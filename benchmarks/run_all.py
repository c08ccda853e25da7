"""Run every CPU benchmark in turn (`make bench`); each writes its own file under benchmarks/results/.

GPU benchmarks (upscale_gpu.py, ...) run on the device machine and are not part of this list.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPU_BENCHMARKS = ["demo.py", "upscale_memory.py", "queue_latency.py", "api_streams.py", "upload_check.py"]


def main() -> int:
    failed = []
    for name in CPU_BENCHMARKS:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
