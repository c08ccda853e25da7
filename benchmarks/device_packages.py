"""The wheels a GPU device run of the whole product needs (benchmarks/native_e2e.py), in parts that each fit one
device call's 64 MiB with the repository.

The device image has torch, transformers and about 200 other packages (/work/.library/device/KINDS.md lists them);
the rest of `spinbot[gpu]`'s dependency closure (as installed in this checkout's .venv) is downloaded here for
CPython 3.12 on x86-64 Linux, less the packages no native job imports (f5-tts's trainer and web UI: gradio, wandb,
datasets; those three get stand-ins from benchmarks/device_site), and split by size into .dev/e2e/pA, pB, ... The
first part holds what `spinbot.settings` needs, so the models writer and the GPU tests can run after the first call.

    python benchmarks/device_packages.py            (here, from the repository root; about 110 MB, two parts)
    device call 1, carry [".dev/e2e/pA"]:  python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .dev/e2e/pA/*.whl
    device call 2 (within the machine's 30 s idle), carry [".dev/e2e/pB", ...]: the same for pB, then
        PYTHONPATH=/tmp/site:$PWD/benchmarks/device_site:$PWD python3 benchmarks/native_e2e.py ...
native_e2e also needs a redis-server (the device has none: carry this machine's binary with the libraries `ldd`
names that the device lacks: libjemalloc, liblzf, libatomic) and the Beckett WAV (--voice).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
KINDS = Path("/work/.library/device/KINDS.md")
# Not imported by a native job: f5-tts's trainer, web UI and evaluation, and what only they pull in.
UNUSED = re.compile(
    r"^(gradio|gradio-client|hf-gradio|groovy|safehttpx|wandb|datasets|cached-path|bitsandbytes|google-.*|"
    r"googleapis-.*|proto-plus|opentelemetry-.*|cwevals|torchcodec|multiprocess|dill|semantic-version|tomlkit|"
    r"brotli|pyasn1|pyasn1-modules|sqlite-vec|espeakng-loader)$"
)
FIRST = {"pydantic", "pydantic-core", "pydantic-settings", "annotated-types", "typing-inspection", "python-dotenv"}
PART_BYTES = 57_000_000  # 64 MiB a call, less the repository (about 5 MB) and a margin
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"] + [
    f"manylinux_2_{n}_x86_64" for n in (24, 27, 28, 31, 34, 35)
]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages() -> set[str]:
    """The package names KINDS.md lists for the device image (its 'Packages:' line)."""
    line = next(line for line in KINDS.read_text().splitlines() if "Packages: " in line)
    return {norm(name.strip(" .")) for name in line.split("Packages: ", 1)[1].split(",")}


def closure() -> dict[str, str]:
    """name -> version of spinbot[gpu]'s runtime dependencies, as installed here."""
    found: dict[str, str] = {}
    stack = [Requirement(r) for r in requires("spinbot") or []]
    while stack:
        req = stack.pop()
        if req.marker and not req.marker.evaluate({"extra": "gpu"}):
            continue
        name = norm(req.name)
        if name in found:
            continue
        try:
            found[name] = version(req.name)
        except PackageNotFoundError:
            continue
        stack += [
            r for r in map(Requirement, requires(req.name) or []) if not r.marker or r.marker.evaluate({"extra": ""})
        ]
    return found


def download(pins: list[str], into: Path) -> None:
    """Binary wheels for the device's Python; a pin PyPI has only as a source archive is built into a wheel here."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    binary = [
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
    ]
    for pin in pins:
        pip = [sys.executable, "-m", "pip"]
        if subprocess.run([*pip, *binary, *platforms, "-d", str(into), pin], capture_output=True).returncode:
            subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(into), pin], check=True)


def split(wheels: Path, out: Path) -> list[Path]:
    """The wheels moved into parts of at most PART_BYTES, FIRST's in the first, the largest first."""
    files = sorted(wheels.glob("*.whl"), key=lambda f: (norm(f.name.split("-")[0]) not in FIRST, -f.stat().st_size))
    parts: list[tuple[Path, int]] = []
    for wheel in files:
        size = wheel.stat().st_size
        index = next((i for i, (_, used) in enumerate(parts) if used + size <= PART_BYTES), None)
        if index is None:
            parts.append((out / f"p{chr(ord('A') + len(parts))}", 0))
            index = len(parts) - 1
        folder, used = parts[index]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(wheel), folder / wheel.name)
        parts[index] = (folder, used + size)
    return [folder for folder, _ in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".dev/e2e", help="where the parts go (.dev is ignored)")
    args = parser.parse_args()
    on_device = device_packages()
    pins = [f"{n}=={v}" for n, v in sorted(closure().items()) if n not in on_device and not UNUSED.match(n)]
    staging = args.out / "wheels"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    download(pins, staging)
    for old in args.out.glob("p[A-Z]"):
        shutil.rmtree(old)
    for part in split(staging, args.out):
        mb = sum(f.stat().st_size for f in part.iterdir()) / 1e6
        print(f"{part}: {len(list(part.iterdir()))} wheels, {mb:.1f} MB")
    staging.rmdir()


if __name__ == "__main__":
    main()
