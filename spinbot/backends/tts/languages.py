"""The language each stretch of a script is spoken in by the lite backend, from its writing system.

espeak-ng speaks one language per voice: its English voice read a Chinese script as "Chinese letter, Chinese
letter, ..." and Cyrillic as noise. A writing system other than Latin names its language well enough (Cyrillic
stands for Russian, Arabic script for Arabic); Latin-script text stays in the seed's English, since telling German
from English needs a language model the lite backend does not have.
"""

from __future__ import annotations

import unicodedata

# The first word of a letter's Unicode name -> espeak-ng's language for it.
LANGUAGES = {
    "CJK": "cmn",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "CYRILLIC": "ru",
    "GREEK": "el",
    "ARABIC": "ar",
    "HEBREW": "he",
    "DEVANAGARI": "hi",
    "BENGALI": "bn",
    "TAMIL": "ta",
    "THAI": "th",
    "GEORGIAN": "ka",
    "ARMENIAN": "hy",
}
_KANA = ("HIRAGANA", "KATAKANA")


def language_runs(text: str, default: str) -> list[tuple[str, str]]:
    """The text cut where the language of its letters changes, as (language, text) pairs in order. Spaces,
    digits and punctuation stay with the letters before them; Chinese characters in a text with kana are Japanese."""
    japanese = any(_script(ch) in _KANA for ch in text)
    runs: list[tuple[str, str]] = []
    current, start = None, 0
    for i, ch in enumerate(text):
        if not unicodedata.category(ch).startswith("L"):
            continue
        language = LANGUAGES.get(_script(ch), default)
        language = "ja" if language == "cmn" and japanese else language
        if current is not None and language != current:
            runs.append((current, text[start:i]))
            start = i
        current = language
    runs.append((current or default, text[start:]))
    return runs


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ", 1)[0]
