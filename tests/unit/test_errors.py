"""One line per error: the first line of a many-line message, the type's name for an empty one."""

from __future__ import annotations

import logging

from spinbot.errors import InputError, first_line
from spinbot.queue.records import one_line
from tests.conftest import require_module


def test_first_line_keeps_the_first_line_and_names_an_empty_error_by_its_type():
    assert first_line(RuntimeError("\n  lowering failed\n  at pass 3\n")) == "lowering failed"
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(ValueError("   ")) == "ValueError"


def test_the_queue_record_names_the_type_except_for_errors_written_for_the_user():
    assert one_line(InputError("audio not found: a.wav\nmore")) == "audio not found: a.wav"
    assert one_line(KeyError("k")) == "KeyError: 'k'"
    assert one_line(OSError()) == "OSError"
    assert one_line(InputError("")) == "InputError"


def test_a_compiler_error_without_a_message_still_falls_back_to_eager(caplog):
    """An empty message made the fallback itself fail (IndexError from ''.splitlines()[0])."""
    torch = require_module("torch")
    from spinbot.backends.upscale.compiled_models import with_eager_fallback

    def compiled() -> str:
        raise RuntimeError()

    with caplog.at_level(logging.WARNING):
        assert with_eager_fallback(torch.nn.Identity(), "upscaler", compiled, lambda: "eager") == "eager"
    assert [(r.model, r.error) for r in caplog.records] == [("upscaler", "RuntimeError")]
