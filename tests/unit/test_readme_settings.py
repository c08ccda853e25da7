"""The README's settings table against spinbot/settings.py: a new user configures from the table, so every setting is
in it (or in docs/queue-choice.md, which the README points to for the queue's and workers' own), with the default
the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spinbot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCUMENTED = README + (ROOT / "docs" / "queue-choice.md").read_text()
# | `SPINBOT_A`, `SPINBOT_B` | `1`, `2` | what |: the variables and their defaults, where each default is a literal
ROW = re.compile(r"^\| (`SPINBOT_\w+`(?:, `SPINBOT_\w+`)*) \| ((?:`[^`|]*`(?:, )?)+) \|", re.M)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name):
    # SPINBOT_S3_MULTIPART_THRESHOLD, _CHUNKSIZE and SPINBOT_S3_PRESIGN_SECONDS were named nowhere
    assert f"`SPINBOT_{name.upper()}`" in DOCUMENTED


def _same(default: object, said: str) -> bool:
    """The README's `value` is the default: numbers by value (`1.0`, `30`), paths as paths, switches lower-case."""
    if isinstance(default, bool):
        return str(default).lower() == said
    if isinstance(default, int | float):
        return float(said) == default
    if isinstance(default, Path):
        return Path(said) == default  # ./spinbot-data is spinbot-data
    return str(default) == said


def test_the_tables_literal_defaults_are_the_codes():
    rows = ROW.findall(README)
    assert len(rows) > 30
    for names, defaults in rows:
        variables = re.findall(r"SPINBOT_(\w+)", names)
        values = re.findall(r"`([^`]*)`", defaults)
        values = values * len(variables) if len(values) == 1 else values  # one default for a group
        for variable, value in zip(variables, values, strict=True):
            default = Settings.model_fields[variable.lower()].default
            if default is not None:  # unset: the README says what stands in (`file://<data dir>`)
                assert _same(default, value), f"SPINBOT_{variable}: README {value!r}, code {default!r}"
