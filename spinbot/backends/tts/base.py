"""The speech backend interface shared by the lite (espeak-ng) and native (F5-TTS) backends.

The task owns the workflow (reference, chunking, joining, resampling, levels); a backend only turns one chunk of
text into speech in the reference's voice (a ScriptVoice first adapts that voice to the whole script: the lite
backend's language). A backend whose model has its own long-text inference (ScriptSpeaker) speaks the whole script
instead, with its own chunk plan and joins; the task still resamples and sets the levels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The narrator voice: mono float audio and its transcript ("" when unknown)."""

    audio: np.ndarray
    sample_rate: int
    text: str


class Voice(Protocol):
    """Whatever a backend derives from the reference once per job (voice settings, prompt features)."""

    def as_meta(self) -> dict[str, Any]:
        """What was derived, for the node's output metadata."""


class SpeechBackend(Protocol):
    name: str
    sample_rate: int
    # Params of TextToSpeechParams this backend acts on; the rest are reported as ignored.
    honoured: frozenset[str]
    # The longest chunk of text the backend synthesizes well in one go.
    max_chunk_chars: int

    def prepare(self, reference: Reference, params: Any) -> Voice:
        """Analyse the reference voice once per job."""

    def synthesize(self, text: str, voice: Voice, params: Any) -> np.ndarray:
        """One chunk of text as float32 mono audio at sample_rate; the same inputs and seed give the same samples."""


@runtime_checkable
class ScriptVoice(SpeechBackend, Protocol):
    """A SpeechBackend whose voice depends on the script it is to speak (the lite backend: the language of its
    Latin-script text). The task calls for_script once per job, with the whole script, before any chunk."""

    def for_script(self, voice: Voice, text: str) -> Voice:
        """The voice to speak `text` with."""


@dataclass(frozen=True)
class SpokenScript:
    """A whole script spoken by a backend that chunks and joins as its model's own inference does."""

    audio: np.ndarray  # float32 mono at the backend's sample_rate, chunks joined
    chunks: list[dict[str, Any]]  # the chunk plan, for the node output (at least each chunk's "text")
    joins: list[int]  # sample where each join is centred


@runtime_checkable
class ScriptSpeaker(SpeechBackend, Protocol):
    """A SpeechBackend that speaks a whole script itself (F5-TTS: its own chunk plan from the reference's speaking
    rate, chunks batched through the model, its own cross-fade). The task then only resamples and sets levels."""

    def speak_script(
        self, text: str, voice: Voice, params: Any, progress: Callable[[float, str], None]
    ) -> SpokenScript:
        """The script as one waveform; progress(fraction, message) as it goes."""
