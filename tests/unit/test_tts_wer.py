"""Is the lite TTS intelligible? Whisper base transcribes its speech of an English paragraph."""

from __future__ import annotations

import soundfile as sf

from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.samples import BECKETT_TRANSCRIPT, voice_path
from spinbot.storage.local import LocalStore
from tests.support.whisper import transcribe, word_error_rate

PARAGRAPH = (
    "Learning something new is rarely a straight line. At first you make mistakes, and that is fine. "
    "Every small failure shows you where to look next. Musicians practice the same passage a hundred times, "
    "and scientists repeat experiments that did not work. So try again, fail again, and fail a little better."
)


def test_whisper_understands_the_lite_voice(tmp_path):
    store = LocalStore(tmp_path)
    store.upload(voice_path(), "jobs/wer/inputs/narrator_voice.wav")
    request = TaskRequest(
        job_id="wer",
        node_id="f5_to_tts",
        task="f5_to_tts",
        values={"text": PARAGRAPH, "ref_text": BECKETT_TRANSCRIPT},
        artifacts={"narrator_voice": "jobs/wer/inputs/narrator_voice.wav"},
    )
    output = execute_task(request, store)
    audio, sr = sf.read(store.path(output.artifacts["audio"]), dtype="float32")

    heard = transcribe(audio, sr)
    wer = word_error_rate(PARAGRAPH, heard)
    print(f"\nlite TTS word error rate (Whisper base): {wer:.1%} over {len(PARAGRAPH.split())} words\nheard: {heard}")
    assert wer < 0.15


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert word_error_rate("Fail again, fail better.", "fail again fail better") == 0.0
    assert word_error_rate("one two three four", "one too three") == 0.5  # a substitution and a deletion
    assert word_error_rate("one two", "one two three four") == 1.0  # two insertions
