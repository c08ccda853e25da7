"""The lite speech backend speaks each stretch of the script in the language its writing system names: espeak-ng's
English voice read a Chinese script as "Chinese letter, Chinese letter, ..." and Cyrillic as noise. Latin-script
text is spoken in the language py3langid detects in it, where it is sure and espeak-ng has the voice, else English;
SPINBOT_TTS_LANGUAGE forces it."""

# ruff: noqa: RUF001 - scripts in Turkish (its dotless i) and Cyrillic-script languages: their letters are meant
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spinbot.backends.tts import espeak
from spinbot.backends.tts.languages import (
    CYRILLIC_VOICES,
    LANGUAGES,
    LATIN_VOICES,
    MIN_CONFIDENCE,
    cyrillic_language,
    espeak_languages,
    language_runs,
    latin_language,
)
from spinbot.control.script import fallback_script
from spinbot.errors import SettingsError
from spinbot.samples import DEMO_PROMPT
from spinbot.settings import get_settings
from spinbot.storage.local import LocalStore
from tests.support.tasks import run_speech, store_with_voice

# Scripts of one to three sentences, as an LLM writes them for a talking head, with the espeak-ng voice for each.
SCRIPTS = [
    ("Schlaf ist eines der wichtigsten Dinge, die du für deine Gesundheit tun kannst.", "de"),
    ("Bonjour et bienvenue. Aujourd'hui, je veux vous parler de l'importance de l'échec.", "fr"),
    ("Bebe un vaso de agua al despertarte. Tu cuerpo te lo agradecerá.", "es"),
    ("Il momento migliore per piantare un albero era vent'anni fa. Il secondo momento migliore è adesso.", "it"),
    ("A maioria das pessoas desiste logo antes de as coisas ficarem mais fáceis.", "pt"),
    ("Drink een glas water als je wakker wordt. Je lichaam zal je dankbaar zijn.", "nl"),
    ("Od trzech lat pracuję z domu i oto, czego się nauczyłem.", "pl"),
    ("Bilgisayarınızı güncellemeden önce dosyalarınızı yedeklemeyi unutmayın.", "tr"),
    ("Giấc ngủ là một trong những điều quan trọng nhất bạn có thể làm cho sức khỏe của mình.", "vi"),
    ("Vår nya produkt lanseras nästa vecka och vi längtar efter att visa er vad den kan göra.", "sv"),
    ("Už tři roky pracuji z domova a tohle jsem se naučil.", "cs"),
    # py3langid splits an Indonesian text between Indonesian (0.54) and Malay: together they are sure
    ("Kebanyakan orang menyerah tepat sebelum semuanya menjadi lebih mudah.", "id"),
]
ENGLISH_SCRIPT = "Every expert was once a beginner. Failure is not the opposite of learning, it is part of it."
# Too short to be sure of, or English with foreign words in it: the seed's English.
STAYS_ENGLISH = [
    "OK.",
    "Danke schön!",
    "Bon appétit!",
    "Pizza Margherita, per favore.",
    "Hasta la vista, baby.",
    "My trip to São Paulo and Rio de Janeiro was amazing.",
    "We had croissants and café au lait in a little bistro.",
    # The fallback script around a German prompt: English and German mixed
    fallback_script("warum Scheitern zum Lernen dazugehört"),
]

# Cyrillic is not only Russian: two scripts of each Cyrillic-script language espeak-ng speaks (one for Tatar and
# Bashkir), with its voice. The detector was sure of each, at 0.89 or more.
CYRILLIC_SCRIPTS = [
    ("Сон очень важен для здоровья. Постарайтесь ложиться спать в одно и то же время.", "ru"),
    ("Большинство людей сдаются прямо перед тем, как всё становится проще.", "ru"),
    ("Сон дуже важливий для здоров'я. Намагайтеся лягати спати в один і той самий час.", "uk"),
    ("Більшість людей здаються саме тоді, коли все ось-ось стане легше.", "uk"),
    ("Сон вельмі важны для здароўя. Старайцеся класціся спаць у адзін і той жа час.", "be"),
    ("Большасць людзей здаюцца якраз перад тым, як усё становіцца прасцей.", "be"),
    ("Сънят е много важен за здравето. Опитайте се да си лягате по едно и също време.", "bg"),
    ("Повечето хора се отказват точно преди нещата да станат по-лесни.", "bg"),
    ("Сан је веома важан за здравље. Покушајте да идете на спавање у исто време.", "sr"),
    ("Већина људи одустане баш пре него што ствари постану лакше.", "sr"),
    ("Сонот е многу важен за здравјето. Обидете се да одите на спиење во исто време.", "mk"),
    ("Повеќето луѓе се откажуваат токму пред работите да станат полесни.", "mk"),
    ("Ұйқы денсаулық үшін өте маңызды. Күн сайын бір уақытта ұйықтауға тырысыңыз.", "kk"),
    ("Көптеген адамдар бәрі оңай болардың алдында ғана берілеміз деп шешеді.", "kk"),
    ("Уйку ден соолук үчүн абдан маанилүү. Ар дайым бир убакта уктаганга аракет кылыңыз.", "ky"),
    ("Көпчүлүк адамдар баары жеңилдей электе эле колун шилтеп коюшат.", "ky"),
    ("Йокы сәламәтлек өчен бик мөһим. Көн саен бер үк вакытта ятарга тырышыгыз.", "tt"),
    ("Йоҡо һаулыҡ өсөн бик мөһим. Көн һайын бер үк ваҡытта ятырға тырышығыҙ.", "ba"),
]
# Too few Cyrillic words to be sure of (Russian, Ukrainian, Serbian, Bulgarian phrases; English with Russian words):
# the Russian voice, as before there was detection.
STAYS_RUSSIAN = [
    "Привет!",
    "Спасибо большое.",
    "Дякую!",
    "Здраво, како си?",
    "Благодаря!",
    "We met Иван in Москва last summer.",
    "The word for sleep is сон in Russian and Ukrainian.",
]


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
        ("Schlaf ist wichtig.", "en-us"),  # Latin letters: the default given (the script's detected language)
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


@pytest.mark.parametrize(
    "language", sorted(set(LANGUAGES.values()) | set(LATIN_VOICES.values()) | set(CYRILLIC_VOICES.values()))
)
def test_espeak_has_each_language_it_may_be_asked_for(language, capfd):
    assert len(espeak.synthesize_raw("a", f"{language}+m3", 175, 50, 0)) > 0  # an unknown voice raises
    assert "Can't read dictionary" not in capfd.readouterr().err  # Faroese has a voice file but no dictionary
    assert language in espeak_languages()  # what SPINBOT_TTS_LANGUAGE takes


@pytest.mark.parametrize(("text", "voice"), SCRIPTS)
def test_a_script_in_a_latin_script_language_gets_that_languages_voice(text, voice):
    chosen = latin_language(text)
    assert (chosen.language, chosen.source) == (voice, "detected")
    assert chosen.confidence is not None and chosen.confidence >= MIN_CONFIDENCE


@pytest.mark.parametrize(("text", "voice"), CYRILLIC_SCRIPTS)
def test_a_script_in_a_cyrillic_script_language_gets_that_languages_voice(text, voice):
    chosen = cyrillic_language(text)
    assert chosen is not None and (chosen.language, chosen.source) == (voice, "detected")
    assert chosen.confidence is not None and chosen.confidence >= MIN_CONFIDENCE
    assert {language for language, _ in language_runs(text, "en-us", chosen.language)} == {voice}


@pytest.mark.parametrize("text", STAYS_RUSSIAN)
def test_a_short_or_mixed_cyrillic_text_stays_russian(text):
    chosen = cyrillic_language(text)
    assert chosen is not None and (chosen.language, chosen.source) == ("ru", "default")
    assert "Russian" in chosen.reason


def test_a_script_without_cyrillic_has_no_cyrillic_language():
    assert cyrillic_language(ENGLISH_SCRIPT) is None and cyrillic_language("睡眠很重要.") is None


def test_a_forced_cyrillic_language_wins_and_a_latin_one_leaves_cyrillic_detected():
    ukrainian, russian = CYRILLIC_SCRIPTS[2][0], CYRILLIC_SCRIPTS[0][0]
    assert (cyrillic_language(russian, "uk").language, cyrillic_language(russian, "uk").source) == ("uk", "forced")
    assert cyrillic_language(ukrainian, "de").language == "uk"


def test_the_backend_speaks_ukrainian_with_the_ukrainian_voice(monkeypatch, use_settings):
    use_settings(tts_language="auto")
    spoken = []

    def recorded(text, voice, rate, pitch, seed):
        spoken.append((voice, text))
        return np.ones(100, np.int16)

    monkeypatch.setattr(espeak, "synthesize_raw", recorded)
    text = "Today: " + CYRILLIC_SCRIPTS[2][0]
    backend = espeak.EspeakBackend()
    voice = backend.for_script(espeak.EspeakVoice("en-us+f4", 50, 175, analysis=None), text)  # type: ignore[arg-type]
    backend.synthesize(text, voice, type("Params", (), {"seed": 1})())
    assert [name for name, _ in spoken] == ["en-us+f4", "uk+f4"]  # before, the Russian voice read it
    assert voice.cyrillic is not None and voice.cyrillic.as_meta("voice")["voice"] == "uk"


def test_an_english_script_stays_english():
    for text in (ENGLISH_SCRIPT, fallback_script(DEMO_PROMPT)):  # the demo's script (no Ollama)
        chosen = latin_language(text)
        assert (chosen.language, chosen.source, chosen.detected) == ("en-us", "detected", "en")


@pytest.mark.parametrize("text", STAYS_ENGLISH)
def test_a_short_or_mixed_text_stays_english(text):
    chosen = latin_language(text)
    assert chosen.language == "en-us"
    assert chosen.source == "default" or chosen.detected == "en"  # not sure of it, or sure it is English


def test_a_language_without_a_voice_stays_english():
    galician = "O sono é unha das cousas máis importantes que podes facer pola túa saúde, segundo os expertos."
    chosen = latin_language(galician)
    assert chosen.language == "en-us" and chosen.detected not in LATIN_VOICES


def test_the_forced_language_wins():
    assert latin_language(ENGLISH_SCRIPT, "de").language == "de"
    assert latin_language(SCRIPTS[0][0], "en-us").language == "en-us"
    assert latin_language("OK.", "pt-br").source == "forced"


@pytest.mark.parametrize(("value", "kept"), [("auto", "auto"), ("DE", "de"), ("pt-BR", "pt-br"), (" fr ", "fr")])
def test_the_setting_takes_auto_or_an_espeak_language(use_settings, value, kept):
    use_settings(tts_language=value)
    assert get_settings().tts_language == kept


@pytest.mark.parametrize("value", ["german", "xx", "", "de+f4", "fo"])  # fo: a voice without its dictionary
def test_a_language_espeak_lacks_is_refused_in_one_line(use_settings, value):
    with pytest.raises(SettingsError, match=r"SPINBOT_TTS_LANGUAGE=.* refused: .*'auto' or a language"):
        use_settings(tts_language=value)
        get_settings()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return store_with_voice(tmp_path)


def speak(store: LocalStore, text: str):
    output = run_speech(store, text)
    audio, _ = sf.read(store.path(output.artifacts["audio"]), dtype="float32")
    return audio, output


@pytest.mark.parametrize(("text", "voice"), [SCRIPTS[0], SCRIPTS[1], SCRIPTS[8]])
def test_the_task_speaks_a_script_with_its_languages_voice(store, use_settings, text, voice, caplog):
    caplog.set_level("INFO", logger="spinbot.backends.tts.espeak")
    audio, output = speak(store, text)
    assert output.meta["espeak"]["voice"] == f"{voice}+m3"  # Beckett's voice: the male variant
    assert output.meta["language"]["latin"] == voice and output.meta["language"]["source"] == "detected"
    assert f"Latin-script text in '{voice}'" in caplog.text
    assert output.values["audio_duration"] > 1.5 and np.abs(audio).max() > 0.1
    use_settings(tts_language="en-us")  # the same text with the English voice: other sounds
    english, forced = speak(store, text)
    assert forced.meta["espeak"]["voice"] == "en-us+m3" and forced.meta["language"]["source"] == "forced"
    assert len(english) != len(audio) or not np.array_equal(english, audio)


def test_the_task_says_which_voice_read_the_cyrillic_text(store):
    _, output = speak(store, CYRILLIC_SCRIPTS[6][0])  # Bulgarian
    cyrillic = output.meta["language"]["cyrillic"]
    assert (cyrillic["voice"], cyrillic["source"], cyrillic["detected"]) == ("bg", "detected", "bg")
    assert output.values["audio_duration"] > 1.5


def test_the_task_keeps_english_for_a_short_text_and_says_why(store):
    _, output = speak(store, "Bon appétit!")
    assert output.meta["espeak"]["voice"] == "en-us+m3"
    assert output.meta["language"]["source"] == "default" and "English" in output.meta["language"]["reason"]


def test_a_forced_language_keeps_other_writing_systems_in_theirs(store, use_settings, monkeypatch):
    use_settings(tts_language="de")
    spoken = []
    real = espeak.synthesize_raw

    def recorded(text, voice, rate, pitch, seed):
        spoken.append(voice)
        return real(text, voice, rate, pitch, seed)

    monkeypatch.setattr(espeak, "synthesize_raw", recorded)
    speak(store, "Heute spreche ich über 睡眠很重要 und warum.")
    assert spoken == ["de+m3", "cmn+m3", "de+m3"]
