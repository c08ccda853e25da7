"""Lines a new user met while following the README (third round): each says what to type instead."""

from __future__ import annotations

import pytest

from spinbot.samples import portrait_path, voice_path
from tests.support.cli import run_cli, stored_job_files


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        ("fps=30", "got 'fps=30'; did you mean --set infinite_talk.fps=30?"),
        ("text=Hello there", "got 'text=Hello there'; did you mean --set 'script.text=Hello there'?"),
        ("nothing=1", "got 'nothing=1'"),  # no node takes it: nothing to suggest
    ],
)
def test_a_set_without_its_node_says_which_node_takes_the_param(spinbot_env, tmp_path, pair, expected):
    # the README and `spinbot params` name params (fps, text); "--set expects NODE.PARAM=VALUE" left the node to guess
    new_job = ["run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path()), "--prompt", "x"]
    code, lines = run_cli(*new_job, "--set", pair)
    assert (code, lines) == (2, [f"error: --set expects NODE.PARAM=VALUE, {expected}"])
    assert stored_job_files(spinbot_env) == []


def test_a_set_quotes_a_long_value_back_shortened(spinbot_env):
    code, lines = run_cli("models", "list", "--set", "x" * 5000)
    assert code == 2 and len(lines) == 1 and "(5,000 characters)" in lines[0] and len(lines[0]) < 200
