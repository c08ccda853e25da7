"""An error whose message is empty still makes a one-line message (`str(err).splitlines()[0]` raised IndexError)."""

from __future__ import annotations

import pytest

from spinbot.backends.talk.infinitetalk import weights
from spinbot.backends.talk.infinitetalk.weights import CheckpointError, read_safetensors


def test_an_unreadable_checkpoint_whose_error_has_no_message_is_named_by_its_type(tmp_path, monkeypatch):
    path = tmp_path / "clip.safetensors"
    path.write_bytes(b"not safetensors")

    def refuse(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(weights, "safe_open", refuse)
    with pytest.raises(CheckpointError) as err:
        read_safetensors(path, "CLIP")
    assert str(err.value) == "CLIP checkpoint clip.safetensors is not a readable safetensors file: OSError"
