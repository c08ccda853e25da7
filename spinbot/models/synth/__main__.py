"""python -m spinbot.models.synth ROOT [--scale tiny|full] [--device cuda] [--task T ...]

Writes the random-weight models folder (see __init__.py), then prints each file's size and the total."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spinbot.models.synth import SCALES, TASKS, write_model_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--scale", choices=SCALES, default="tiny")
    parser.add_argument("--device", default="cpu", help="where tensors are generated (cuda: fast; cpu: slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", action="append", choices=TASKS, help="repeatable; default: all three")
    args = parser.parse_args()
    start = time.monotonic()
    written = write_model_folder(args.root, args.scale, args.device, args.seed, tuple(args.task or TASKS))
    for path, size in written.items():
        print(f"{size / 1e9:9.3f} GB  {path}")
    print(f"{sum(written.values()) / 1e9:.1f} GB in {len(written)} files, {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
