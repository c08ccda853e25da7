"""The lite speech backend: espeak-ng (library and data from the espeakng-loader wheel) driven through ctypes,
with voice variant, pitch and rate adapted to the narrator voice."""

from __future__ import annotations

import _ctypes
import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spinbot.backends.tts.analysis import VoiceAnalysis, analyse_voice
from spinbot.backends.tts.base import Reference
from spinbot.backends.tts.languages import (
    ENGLISH,
    RUSSIAN,
    LatinLanguage,
    cyrillic_language,
    language_runs,
    latin_language,
)
from spinbot.errors import BackendUnavailable

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
RATE_LIMITS = (80, 450)  # espeakRATE_MINIMUM, espeakRATE_MAXIMUM (words per minute)

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# The library and its callback buffer are process-wide: one utterance at a time.
_LOCK = threading.Lock()
_chunks: list[np.ndarray] = []


@_SynthCallback
def _collect(wav, count, _events):
    if wav and count > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0  # 0: go on synthesizing


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]


@contextmanager
def _fresh_library() -> Iterator[ctypes.CDLL]:
    """A freshly loaded, initialised espeak-ng.

    espeak-ng keeps synthesis state in globals that carry over from one utterance to the next (the pitch flutter
    phase, the echo buffer, the gain control), so the same text comes out differently depending on what was said
    before. Unloading and loading the library for every utterance makes each one depend only on its own inputs;
    it costs a few milliseconds.
    """
    import espeakng_loader

    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as err:
        raise BackendUnavailable(f"f5_to_tts lite: cannot load espeak-ng ({err})") from None
    try:
        _declare(lib)
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), _INITIALIZE_DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise BackendUnavailable(f"f5_to_tts lite: espeak-ng failed to initialise (returned {rate})")
        try:
            lib.espeak_SetSynthCallback(_collect)
            yield lib
        finally:
            lib.espeak_Terminate()
    finally:
        _ctypes.dlclose(lib._handle)


def synthesize_raw(text: str, voice: str, rate: int, pitch: int, seed: int) -> np.ndarray:
    """One utterance as int16 samples at 22,050 Hz."""
    data = text.encode("utf-8") + b"\0"
    with _LOCK, _fresh_library() as lib:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise BackendUnavailable(f"f5_to_tts lite: espeak-ng has no voice '{voice}'")
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        # The breathy variants draw noise from both espeak's generator and libc's rand(); both take 31 bits.
        seed &= 0x7FFFFFFF
        lib.espeak_ng_SetRandSeed(seed)
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
        _chunks.clear()
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        audio = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    if status != 0:
        raise BackendUnavailable(f"f5_to_tts lite: espeak-ng synthesis failed (status {status})")
    return audio


# Median F0 (Hz) of en-us speech at espeak pitch 0, 10, ..., 100, per voice variant; measured with
# analysis.median_f0 on a two-sentence English paragraph at rate 175. Used to pick the pitch that lands on the
# narrator's F0.
_PITCH_STEPS = np.arange(0, 101, 10)
_F0_AT_PITCH = {
    "m3": np.array([70.4, 74.0, 79.1, 83.8, 91.9, 101.0, 111.7, 123.6, 137.8, 153.7, 170.0]),
    "f4": np.array([109.2, 119.2, 129.7, 143.0, 157.4, 174.8, 195.2, 217.7, 243.9, 273.5, 304.1]),
}
# Below this median F0 the narrator gets the male variant, above it the female one (typical adult speaking
# pitch: about 85-155 Hz for men, 165-255 Hz for women).
_FEMALE_FROM_HZ = 160.0
# Articulation rate (words per minute, long pauses excluded, as analysis measures it) that espeak's rate
# setting gives, measured on the same paragraph: espeak's own rate counts its pauses, so it speaks faster.
_RATE_SETTINGS = np.array([80, 100, 120, 140, 160, 175, 200, 250, 300, 350, 450])
_MEASURED_WPM = np.array([112.6, 131.6, 154.5, 180.2, 192.7, 209.6, 233.0, 286.0, 341.1, 385.2, 489.1])
_DEFAULT_RATE, _DEFAULT_PITCH = 175, 50


@dataclass(frozen=True)
class EspeakVoice:
    name: str  # espeak voice: the language of Latin-script text + variant, e.g. "en-us+m3", "de+m3"
    pitch: int  # 0-100
    rate: int  # espeak words per minute
    analysis: VoiceAnalysis
    language: LatinLanguage | None = None  # how the language in the name was chosen (None: before the script)
    cyrillic: LatinLanguage | None = None  # the language of the script's Cyrillic text (None: it has none)

    @property
    def warnings(self) -> list[str]:
        if self.analysis.f0_hz is not None:
            return []
        # noise, a hum or music passes as "not silent" at submission: the user hears a voice that is not theirs
        return ["no voiced speech in the narrator voice (no pitch found): spoke with espeak's default pitch and rate"]

    def as_meta(self) -> dict[str, Any]:
        meta = {
            "voice_analysis": self.analysis.as_meta(),
            "espeak": {"voice": self.name, "pitch": self.pitch, "rate": self.rate},
            "warnings": self.warnings,
        }
        if self.language is None:
            return meta
        language = self.language.as_meta()
        if self.cyrillic is not None:
            language["cyrillic"] = self.cyrillic.as_meta("voice")
        return meta | {"language": language}


def choose_pitch(f0_hz: float | None) -> tuple[str, int]:
    """Variant and pitch setting whose median F0 is closest to the narrator's."""
    if f0_hz is None:
        return "m3", _DEFAULT_PITCH
    variant = "f4" if f0_hz >= _FEMALE_FROM_HZ else "m3"
    return variant, round(np.interp(f0_hz, _F0_AT_PITCH[variant], _PITCH_STEPS))


def choose_rate(words_per_minute: float | None, speed: float) -> int:
    """espeak rate setting that gives the narrator's articulation rate times speed, within espeak's limits."""
    if words_per_minute is None:
        return round(np.clip(_DEFAULT_RATE * speed, *RATE_LIMITS))
    # The table spans espeak's whole range, so interpolating in it also clamps to that range.
    return round(np.interp(words_per_minute * speed, _MEASURED_WPM, _RATE_SETTINGS))


class EspeakBackend:
    """The narrator's median F0 picks the variant and pitch, the articulation rate (times speed) the rate.

    espeak has no sampling, so model, device, temperature, nfe_step and cfg_strength have nothing to act on.
    The seed feeds espeak's noise generators; m3 and f4 have no breath noise, so for them the output is the same
    for every seed, and always the same for the same inputs.
    """

    name = "lite (espeak-ng)"
    sample_rate = SAMPLE_RATE
    honoured = frozenset({"narrator_voice", "ref_text", "speed", "seed"})
    max_chunk_chars = 200

    def prepare(self, reference: Reference, params: Any) -> EspeakVoice:
        analysis = analyse_voice(reference.audio, reference.sample_rate, reference.text)
        variant, pitch = choose_pitch(analysis.f0_hz)
        rate = choose_rate(analysis.words_per_minute, float(params.speed))
        voice = EspeakVoice(f"{ENGLISH}+{variant}", pitch, rate, analysis)
        for warning in voice.warnings:
            log.warning(warning)
        return voice

    def for_script(self, voice: EspeakVoice, text: str) -> EspeakVoice:
        """The voice in the language of the script's Latin-script text: SPINBOT_TTS_LANGUAGE where set, else the one
        detected where the detector is sure of it, else English; its Cyrillic text's likewise, else Russian
        (spinbot.backends.tts.languages)."""
        from spinbot.settings import get_settings

        forced = get_settings().tts_language
        language, cyrillic = latin_language(text, forced), cyrillic_language(text, forced)
        log.info("f5_to_tts lite: Latin-script text in '%s': %s", language.language, language.reason)
        if cyrillic is not None:
            log.info("f5_to_tts lite: Cyrillic text in '%s': %s", cyrillic.language, cyrillic.reason)
        variant = voice.name.partition("+")[2]
        return replace(voice, name=f"{language.language}+{variant}", language=language, cyrillic=cyrillic)

    def synthesize(self, text: str, voice: EspeakVoice, params: Any) -> np.ndarray:
        """Each stretch of the text in the language its writing system names (spinbot.backends.tts.languages),
        Latin letters in the voice's language; in the narrator's variant, pitch and rate."""
        latin, _, variant = voice.name.partition("+")
        cyrillic = voice.cyrillic.language if voice.cyrillic is not None else RUSSIAN
        parts = [
            synthesize_raw(run, f"{language}+{variant}", voice.rate, voice.pitch, params.seed)
            for language, run in language_runs(text, latin, cyrillic)
        ]
        return np.concatenate(parts).astype(np.float32) / 32768.0
