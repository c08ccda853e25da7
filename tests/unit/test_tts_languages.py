"""The lite speech backend speaks each stretch of the script in the language its writing system names: espeak-ng's
English voice read a Chinese script as "Chinese letter, Chinese letter, ..." and Cyrillic as noise."""

from __future__ import annotations

import numpy as np
import pytest

from spinbot.backends.tts import espeak
from spinbot.backends.tts.languages import LANGUAGES, language_runs


def test_a_script_is_cut_where_its_writing_system_changes():
    text = "Today I want to talk about 为什么睡眠很重要. It matters."
    assert language_runs(text, "en-us") == [
        ("en-us", "Today I want to talk about "),
        ("cmn", "为什么睡眠很重要. "),
        ("en-us", "It matters."),
    ]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("睡眠对健康非常重要。", "cmn"),
        ("睡眠はとても大切です。", "ja"),  # kanji among kana: Japanese, not Mandarin
        ("수면은 중요합니다.", "ko"),
        ("Сон очень важен для здоровья.", "ru"),
        ("Ύπνος είναι σημαντικός.", "el"),
        ("النوم مهم للصحة.", "ar"),
        ("नींद बहुत ज़रूरी है।", "hi"),
        ("Schlaf ist wichtig.", "en-us"),  # Latin letters: the seed's English (no language is guessed from words)
        ("42!", "en-us"),
    ],
)
def test_each_writing_system_has_its_language(text, language):
    assert language_runs(text, "en-us") == [(language, text)]


def test_the_backend_speaks_a_chinese_script_with_the_mandarin_voice(monkeypatch):
    spoken = []

    def recorded(text, voice, rate, pitch, seed):
        spoken.append((voice, text))
        return np.ones(100, np.int16)

    monkeypatch.setattr(espeak, "synthesize_raw", recorded)
    voice = espeak.EspeakVoice("en-us+f4", 50, 175, analysis=None)  # type: ignore[arg-type]
    params = type("Params", (), {"seed": 1})()
    audio = espeak.EspeakBackend().synthesize("It is 睡眠很重要.", voice, params)
    assert spoken == [("en-us+f4", "It is "), ("cmn+f4", "睡眠很重要.")] and len(audio) == 200


@pytest.mark.parametrize("language", sorted(set(LANGUAGES.values())))
def test_espeak_has_each_language_it_may_be_asked_for(language):
    assert len(espeak.synthesize_raw("a", f"{language}+m3", 175, 50, 0)) > 0  # an unknown voice raises
