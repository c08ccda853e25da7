"""The language each stretch of a script is spoken in by the lite backend.

espeak-ng speaks one language per voice: its English voice read a Chinese script as "Chinese letter, Chinese
letter, ..." and Cyrillic as noise. Most writing systems other than Latin name their language well enough (Arabic
script stands for Arabic, Greek for Greek). Latin letters do not: German, French or Vietnamese read with the
English voice is mangled; nor do Cyrillic ones: Ukrainian, Bulgarian or Serbian read with the Russian voice are. The
Latin-script text of a script, and its Cyrillic text, are each given to a language identifier (py3langid, whose
model ships in its wheel), once per script, and spoken in the language it names where it is sure of it and
espeak-ng has a voice for it; otherwise (a few words, a mix of languages, a language without a voice) Latin letters
stay in the seed's English and Cyrillic ones in Russian. SPINBOT_TTS_LANGUAGE forces the Latin-script language
instead (and the Cyrillic one, where it names a Cyrillic-script language).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

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
CYRILLIC = "CYRILLIC"
RUSSIAN = LANGUAGES[CYRILLIC]  # Cyrillic letters are spoken in it unless detection says otherwise

ENGLISH = "en-us"  # the seed's scripts are English: Latin letters are spoken in it unless detection says otherwise
# Latin-script languages py3langid tells apart and espeak-ng has a voice for: the detector's code -> espeak-ng's voice.
# A detected language that is not here (Galician, Tagalog, Yoruba, ... have no espeak-ng voice; Faroese has one
# without its dictionary) leaves the text in English. Regional voices (pt-br, es-419, fr-be, en-gb) are not guessed:
# the detector cannot tell them apart; SPINBOT_TTS_LANGUAGE picks one.
_SAME_CODE = ("af", "an", "az", "bs", "ca", "cs", "cy", "da", "de", "eo", "es", "et", "eu", "fi", "fr", "ga", "gd",
              "hr", "ht", "hu", "id", "is", "it", "ku", "la", "lb", "lt", "ltg", "lv", "ms", "mt", "nl", "om", "pl",
              "pt", "qu", "ro", "sk", "sl", "sq", "sr", "sv", "sw", "tk", "tr", "uz", "vi")  # fmt: skip
LATIN_VOICES = {
    **{code: code for code in _SAME_CODE},
    "en": ENGLISH,
    "gug": "gn",  # Guarani
    "no": "nb",  # Norwegian: espeak-ng's voice is Bokmål
    "nn": "nb",
}
# Cyrillic-script languages py3langid tells apart and espeak-ng has a voice for (Mongolian and Tajik have none).
CYRILLIC_VOICES = {code: code for code in ("ba", "be", "bg", "kk", "ky", "mk", "ru", "sr", "tt", "uk")}
# Closely related languages the detector splits its belief between (an Indonesian sentence scored 0.54 Indonesian
# and 0.45 Malay): how sure it is that the text is in one of them is what counts, and the voice is the likelier one's.
RELATED = (
    frozenset({"id", "ms"}),
    frozenset({"da", "no", "nn"}),
    frozenset({"bs", "hr", "sr"}),
    frozenset({"cs", "sk"}),
)
# Below this the text stays English. On 122 scripts of 1-3 sentences in 17 languages the detector was right on
# every one, at 0.92 or more; short phrases ("OK.", "Bon appétit!", "Pizza Margherita.") and English sentences with
# foreign names in them ("My trip to São Paulo and Rio de Janeiro was amazing.") scored 0.47 at most.
MIN_CONFIDENCE = 0.8
MIN_WORDS = 3  # fewer Latin-script words than this are not given to the detector at all: English

_WORD = re.compile(r"[^\W\d_]+")


def language_runs(text: str, default: str, cyrillic: str = RUSSIAN) -> list[tuple[str, str]]:
    """The text cut where the language of its letters changes, as (language, text) pairs in order. Latin letters
    (and those of a writing system not in LANGUAGES) are in `default`, Cyrillic ones in `cyrillic`; spaces, digits
    and punctuation stay with the letters before them; Chinese characters in a text with kana are Japanese."""
    japanese = any(_script(ch) in _KANA for ch in text)
    runs: list[tuple[str, str]] = []
    current, start = None, 0
    for i, ch in enumerate(text):
        if not unicodedata.category(ch).startswith("L"):
            continue
        script = _script(ch)
        language = cyrillic if script == CYRILLIC else LANGUAGES.get(script, default)
        language = "ja" if language == "cmn" and japanese else language
        if current is not None and language != current:
            runs.append((current, text[start:i]))
            start = i
        current = language
    runs.append((current or default, text[start:]))
    return runs


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ", 1)[0]


@dataclass(frozen=True)
class LatinLanguage:
    """The language the Latin-script (or Cyrillic) stretches of a script are spoken in, and why."""

    language: str  # an espeak-ng language
    source: Literal["forced", "detected", "default"]
    reason: str  # one line, for the log and the node output
    detected: str | None = None  # the detector's likeliest language (its code), where it ran
    confidence: float | None = None  # its probability, pooled with RELATED languages'

    def as_meta(self, key: str = "latin") -> dict[str, Any]:
        meta: dict[str, Any] = {key: self.language, "source": self.source, "reason": self.reason}
        if self.detected is not None:
            meta |= {"detected": self.detected, "confidence": self.confidence}
        return meta


def latin_language(text: str, forced: str = "auto") -> LatinLanguage:
    """The language for the script's Latin-script stretches: `forced` unless it is "auto", else the detected one
    where the detector is sure of it and espeak-ng can speak it, else English."""
    if forced != "auto":
        return LatinLanguage(forced, "forced", f"SPINBOT_TTS_LANGUAGE={forced}")
    latin = " ".join(run for language, run in language_runs(text, ENGLISH) if language == ENGLISH)
    return _detected(latin, "Latin-script", ENGLISH, "English", LATIN_VOICES)


def cyrillic_language(text: str, forced: str = "auto") -> LatinLanguage | None:
    """The language for the script's Cyrillic stretches (None: it has none): `forced` where it is a Cyrillic-script
    language, else the detected one where the detector is sure of it and espeak-ng can speak it, else Russian."""
    cyrillic = " ".join(run for language, run in language_runs(text, ENGLISH, CYRILLIC) if language == CYRILLIC)
    if not cyrillic:
        return None
    if forced in CYRILLIC_VOICES.values():
        return LatinLanguage(forced, "forced", f"SPINBOT_TTS_LANGUAGE={forced}")
    return _detected(cyrillic, "Cyrillic", RUSSIAN, "Russian", CYRILLIC_VOICES)


def _detected(text: str, script: str, default: str, default_name: str, voices: dict[str, str]) -> LatinLanguage:
    """The voice of the language py3langid finds in `text` (one writing system's stretches of a script), where it
    is sure of it and `voices` has it; else `default`."""
    words = len(_WORD.findall(text))
    if words < MIN_WORDS:
        why = f"{words} {script} word{'s' * (words != 1)}, too few to tell the language: {default_name}"
        return LatinLanguage(default, "default", why)
    scores = dict(_identifier().rank(text))
    best = max(scores, key=scores.__getitem__)
    related = next((group for group in RELATED if best in group), {best})
    confidence = round(float(sum(scores.get(code, 0.0) for code in related)), 3)
    guess = {"detected": best, "confidence": confidence}
    if confidence < MIN_CONFIDENCE:
        why = f"not sure of its language (likeliest '{best}' at {confidence:.2f}, under {MIN_CONFIDENCE})"
        return LatinLanguage(default, "default", f"{why}: {default_name}", **guess)
    if best not in voices:
        why = f"'{best}' ({confidence:.2f}) has no lite voice: {default_name}"
        return LatinLanguage(default, "default", why, **guess)
    voice = voices[best]
    return LatinLanguage(voice, "detected", f"detected '{best}' ({confidence:.2f}): spoken in '{voice}'", **guess)


_LOAD = threading.Lock()


@cache
def _load_identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # norm_probs: probabilities that sum to 1, tempered by the text's length (short texts are never sure)
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _identifier() -> Any:
    """py3langid's identifier over all its languages (about a second and 100 MB to load, once per process)."""
    with _LOAD:
        return _load_identifier()


@cache  # espeak-ng's data files do not change under a running process; settings validate more than once
def espeak_languages() -> frozenset[str]:
    """Every language espeak-ng has a voice for (the names of its voice files, lower-case: de, pt-br, en-us, ...), less
    those whose dictionary its data lacks (Faroese, Karakalpak: they speak with an error on stderr)."""
    import espeakng_loader

    data = Path(espeakng_loader.get_data_path())
    languages = set()
    for path in (data / "lang").rglob("*"):
        if path.is_file():
            fields: dict[str, str] = {}
            for line in path.read_text().splitlines():
                if len(line.split()) > 1:
                    fields.setdefault(*line.split()[:2])  # a field's first line (the main language comes first)
            # espeak-ng's dictionary is the voice's "dictionary", else its language's up to the first "-"
            dictionary = fields.get("dictionary", fields.get("language", path.name)).split("-")[0]
            if (data / f"{dictionary}_dict").is_file():
                languages.add(path.name.lower())
    return frozenset(languages)
