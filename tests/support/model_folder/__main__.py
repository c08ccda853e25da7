"""python -m tests.support.model_folder ROOT [--scale tiny|full] [--device cuda] [--task T ...]

Writes the random-weight models folder (see __init__.py), then prints each file's size and the total."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tests.support.model_folder import SCALES, TASKS, write_model_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--scale", choices=SCALES, default="tiny")
    parser.add_argument("--device", default="cpu", help="where tensors are generated (cuda: fast; cpu: slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", action="append", choices=TASKS, help="repeatable; default: all three")
    args = parser.parse_args()
    start = time.monotonic()
    write_model_folder(args.root, args.scale, args.device, args.seed, tuple(args.task or TASKS))
    files = sorted(p for p in args.root.rglob("*") if p.is_file())
    for path in files:
        print(f"{path.stat().st_size / 1e9:9.3f} GB  {path.relative_to(args.root)}")
    total = sum(p.stat().st_size for p in files)
    print(f"{total / 1e9:.1f} GB in {len(files)} files, {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
