"""An input file named on the command line, checked before it is decoded: there, a regular file, and readable.
Each case is its own line, so a folder or a permission problem is not reported as a missing or broken file."""

from __future__ import annotations

from pathlib import Path

from spinbot.errors import InputError


def check_input_file(path: Path, what: str) -> None:
    """InputError naming `what` (image, audio) and the path: not found, a folder, not a regular file, unreadable."""
    if path.is_dir():
        raise InputError(f"{what} is a folder, not a file: {path}")
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} is not a regular file: {path}")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise InputError(f"cannot read the {what} file {path} ({err.strerror or err})") from None
