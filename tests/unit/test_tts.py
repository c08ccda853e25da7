"""f5_to_tts with the lite (espeak-ng) backend, run the way the worker runs it, judged on the WAV it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spinbot.backends.tts.analysis import analyse_voice, median_f0
from spinbot.backends.tts.espeak import SAMPLE_RATE, synthesize_raw
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.errors import InputError, ParamsError
from spinbot.media.audio import crossfade_concat, limit_peaks, normalize_rms, rms, write_wav
from spinbot.samples import BECKETT_TRANSCRIPT, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks.tts import TextToSpeechParams, plan_chunks

VOICE_KEY = "jobs/job1/inputs/narrator_voice.wav"
ONE_SENTENCE = "Every expert was once a beginner."
SCRIPT = (
    "Every expert was once a beginner. Failure is not the opposite of learning, it is part of it. "
    "Each mistake shows you something the book could not, so try again, and fail a little better each time."
)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    store.upload(voice_path(), VOICE_KEY)
    return store


def speak(store: LocalStore, text=SCRIPT, job_ref_text=BECKETT_TRANSCRIPT, artifacts=None, report=None, **params):
    """Run the task as the worker does; params are the node's params, the rest the job's inputs."""
    request = TaskRequest(
        job_id="job1",
        node_id="f5_to_tts",
        task="f5_to_tts",
        params=params,
        values={"text": text, "ref_text": job_ref_text},
        artifacts={"narrator_voice": VOICE_KEY} if artifacts is None else artifacts,
    )
    output = execute_task(request, store, report=report or (lambda f, m: None))
    audio, sr = sf.read(store.path(output.artifacts["audio"]), dtype="float32")
    return audio, sr, output


@pytest.mark.parametrize("target_rms", [0.1, 0.05, 0.2])
def test_wav_is_24khz_mono_at_target_rms_and_never_full_scale(store, target_rms):
    audio, sr, output = speak(store, target_rms=target_rms)
    info = sf.info(store.path(output.artifacts["audio"]))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert rms(audio) == pytest.approx(target_rms, rel=0.10)
    assert np.abs(audio).max() < 0.999
    assert output.meta["warnings"] == []
    assert output.values["audio_duration"] == pytest.approx(len(audio) / sr, abs=1e-3)


def test_a_target_too_loud_for_the_ceiling_is_limited_not_clipped(store):
    audio, _, output = speak(store, target_rms=0.4)
    assert np.abs(audio).max() < 0.96
    # Hard clipping leaves flat tops: runs of samples stuck at the ceiling. The limiter leaves none.
    at_top = np.abs(audio) >= np.abs(audio).max() - 1e-4
    assert not np.any(at_top[:-2] & at_top[1:-1] & at_top[2:])
    assert "target_rms 0.4" in output.meta["warnings"][0]


def test_no_click_at_chunk_joins(store):
    audio, sr, output = speak(store, cross_fade_duration=0.15)
    joins = [int(t * sr) for t in output.meta["joins_s"]]
    assert len(joins) == len(output.meta["chunks"]) - 1 == 2
    step = np.abs(np.diff(audio))
    ms = sr // 1000
    for j in joins:
        # A click is a step larger than anything around it: compare the 10 ms at the join with the 10 ms on
        # either side (2 LSB of slack for the 16-bit rounding of near-silence).
        at_join = step[j - 5 * ms : j + 5 * ms].max()
        around = max(step[j - 15 * ms : j - 5 * ms].max(), step[j + 5 * ms : j + 15 * ms].max())
        assert at_join <= 1.5 * around + 2 / 32768


def test_equal_power_crossfade_joins_loud_chunks_without_a_step():
    sr = 24000
    t = np.arange(sr // 2) / sr
    a = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    b = (0.5 * np.sin(2 * np.pi * 330 * t + 2.0)).astype(np.float32)
    joined, _ = crossfade_concat([a, b], sr, 0.02)
    assert len(joined) == len(a) + len(b) - int(0.02 * sr)
    largest_step = max(np.abs(np.diff(a)).max(), np.abs(np.diff(b)).max())
    # Mid-fade both chunks play at cos = sin = 0.71: in phase, their slopes add up to sqrt(2) times one's.
    assert np.abs(np.diff(joined)).max() <= largest_step * 1.5
    # Butt-joined, the same chunks click: the test can see a click.
    assert np.abs(np.diff(np.concatenate([a, b]))).max() > largest_step * 2
    # Equal power: uncorrelated noise keeps its level through the fade.
    rng = np.random.default_rng(0)
    n1, n2 = rng.standard_normal((2, sr)).astype(np.float32) * 0.1
    noise, (centre,) = crossfade_concat([n1, n2], sr, 0.5)
    assert rms(noise[centre - 2400 : centre + 2400]) == pytest.approx(0.1, rel=0.1)


def test_limiter_gain_is_smooth_and_holds_the_ceiling():
    sr = 24000
    t = np.arange(sr) / sr
    loud = (1.6 * np.sin(2 * np.pi * 200 * t) * (t > 0.5)).astype(np.float32)
    limited = limit_peaks(loud, sr, ceiling=0.95)
    assert np.abs(limited).max() <= 0.95 + 1e-6
    # A sine in, a (quieter) sine out: no flattened tops.
    cycle = limited[int(0.7 * sr) : int(0.7 * sr) + sr // 200]
    assert np.count_nonzero(np.abs(cycle) > 0.95 - 1e-3) <= 2
    assert rms(normalize_rms(loud[sr // 2 :] * 0.1, sr, 0.3)) == pytest.approx(0.3, rel=0.01)


def test_duration_grows_with_the_text(store):
    durations = [
        speak(store, text=text)[2].values["audio_duration"] for text in (ONE_SENTENCE, SCRIPT, SCRIPT + " " + SCRIPT)
    ]
    assert durations[0] < durations[1] < durations[2]


def test_duration_grows_when_speed_decreases(store):
    normal = speak(store, speed=1)[2]
    slow = speak(store, speed=0.7)[2]
    assert slow.meta["espeak"]["rate"] < normal.meta["espeak"]["rate"]
    assert slow.values["audio_duration"] / normal.values["audio_duration"] == pytest.approx(1 / 0.7, rel=0.15)


def test_same_seed_gives_identical_bytes(store):
    first = speak(store, seed=7)[2].artifacts["audio"]
    first_bytes = store.get_bytes(first)
    speak(store, text="Something else is said in between.", seed=7)
    again = speak(store, seed=7)[2].artifacts["audio"]
    assert store.get_bytes(again) == first_bytes


def test_voice_follows_the_narrators_pitch_and_rate(store):
    audio, sr, output = speak(store)
    narrator = output.meta["voice_analysis"]
    assert narrator["rate_source"] == "ref_text"
    assert output.meta["espeak"]["voice"].endswith("+m3")  # Beckett's voice is male, about 114 Hz
    spoken = analyse_voice(audio, sr, SCRIPT)
    assert spoken.f0_hz == pytest.approx(narrator["f0_hz"], rel=0.10)
    assert spoken.words_per_minute == pytest.approx(narrator["words_per_minute"], rel=0.15)


def test_a_high_voice_gets_the_female_variant_at_its_pitch(store, tmp_path):
    said = "The weather was lovely today, so we walked down to the harbour and watched the boats."
    reference = synthesize_raw(said, "en-us+f4", rate=120, pitch=80, seed=1).astype(np.float32) / 32768
    key = "jobs/job1/inputs/high_voice.wav"
    store.upload(write_wav(tmp_path / "high.wav", reference, SAMPLE_RATE), key)
    audio, sr, output = speak(store, job_ref_text=said, narrator_voice=key, artifacts={})
    assert output.meta["espeak"]["voice"].endswith("+f4")
    assert median_f0(audio, sr) == pytest.approx(median_f0(reference, SAMPLE_RATE), rel=0.10)
    reference_rate = analyse_voice(reference, SAMPLE_RATE, said).words_per_minute
    assert analyse_voice(audio, sr, SCRIPT).words_per_minute == pytest.approx(reference_rate, rel=0.15)


def test_without_a_transcript_the_rate_is_estimated_from_syllables(store):
    with_text = speak(store)[2].meta["voice_analysis"]
    without = speak(store, job_ref_text="")[2].meta["voice_analysis"]
    assert without["rate_source"] == "syllable nuclei"
    assert without["words_per_minute"] == pytest.approx(with_text["words_per_minute"], rel=0.25)


def test_the_ref_text_param_overrides_the_jobs_transcript(store):
    output = speak(store, job_ref_text="", ref_text=BECKETT_TRANSCRIPT)[2]
    assert output.meta["voice_analysis"]["rate_source"] == "ref_text"


def test_every_seed_param_is_accepted_with_its_default_and_the_unused_are_reported(store):
    defaults = TextToSpeechParams().model_dump()  # every seed param: test_params.py checks the names
    output = speak(store, **defaults)[2]
    assert output.meta["ignored_params"] == {
        "model": "F5TTS_v1_Base",
        "device": "cuda",
        "temperature": 0.8,
        "nfe_step": 32,
        "cfg_strength": 2,
    }
    assert set(output.meta["honoured_params"]) | set(output.meta["ignored_params"]) == set(defaults)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"nfe_step": "abc"}, "nfe_step"),
        ({"speed": "fast"}, "speed"),
        ({"target_rms": 0}, "target_rms"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_an_ill_typed_param_is_refused(store, params, field):
    with pytest.raises(ParamsError, match=f"f5_to_tts.{field}:"):
        speak(store, **params)


@pytest.mark.parametrize(
    "text, message", [("", "nothing to speak"), ("  ... !  ", "nothing to speak"), (42, "must be a string")]
)
def test_empty_or_bad_text_is_a_clear_error(store, text, message):
    with pytest.raises(InputError, match=message) as err:
        speak(store, text=text)
    assert "\n" not in str(err.value)


def test_a_missing_narrator_voice_is_a_clear_error(store):
    with pytest.raises(InputError, match="narrator_voice"):
        speak(store, artifacts={})


def test_progress_is_reported_per_chunk(store):
    messages = []
    speak(store, report=lambda fraction, message: messages.append(message))
    assert [m for m in messages if m.startswith("speaking chunk")] == [f"speaking chunk {i}/3" for i in (1, 2, 3)]


def test_progress_of_a_long_script_stays_below_the_resampling_step(store):
    # 25 chunks: unscaled, chunk 25 would report 24/25 = 0.96, above the 0.95 of the step after it
    reports = []
    speak(store, text=" ".join(f"Line {i} is here." for i in range(25)), report=lambda f, m: reports.append((f, m)))
    assert sum(m.startswith("speaking chunk") for _, m in reports) >= 21
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions)


def test_long_sentences_are_split_at_commas_within_the_limit():
    long_sentence = (
        "When you start something new, you will stumble, you will forget, you will feel slow, "
        "and all of that is simply what learning feels like from the inside."
    )
    chunks = plan_chunks(f"Short one. {long_sentence} Done!", max_chars=60)
    assert chunks[0].text == "Short one."
    assert all(len(c.text) <= 60 for c in chunks)
    assert " ".join(c.text for c in chunks) == f"Short one. {long_sentence} Done!"
    assert chunks[1].text.endswith(",") and chunks[1].pause_after < chunks[0].pause_after
    assert plan_chunks("one " * 40, max_chars=30)[0].text.count("one") == 7


def test_a_narrator_voice_with_no_speech_in_it_is_warned_of(store, tmp_path, caplog):
    # noise, a hum or a click passed as "not silent", and the default voice spoke with no word of why
    noise = (0.01 * np.random.default_rng(0).standard_normal(5 * 16000)).astype(np.float32)
    key = "jobs/job1/inputs/noise.wav"
    store.upload(write_wav(tmp_path / "noise.wav", noise, 16000), key)
    output = speak(store, ONE_SENTENCE, job_ref_text="", narrator_voice=key, artifacts={})[2]
    said = "no voiced speech in the narrator voice (no pitch found): spoke with espeak's default pitch and rate"
    assert output.meta["warnings"] == [said] and said in caplog.messages
