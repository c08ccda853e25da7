"""f5_to_tts: script text + narrator voice -> speech WAV (24 kHz mono, RMS-normalized).

The seed's workflow: F5TTSNode.generate_speech -> resample & normalize -> WAV artifact. Here the workflow is the
task's own and shared by every backend: the text is split into sentence chunks, the backend speaks each chunk in
the narrator's voice, the chunks are joined with an equal-power cross-fade, resampled to 24 kHz mono, normalized to
target_rms under a peak limiter and written as a WAV artifact. A backend whose model has its own long-text inference
(the native F5-TTS backend: spinbot.backends.tts.base.ScriptSpeaker) plans, speaks and joins the chunks itself; its
chunk plan goes into the node output the same way, and the task still resamples and normalizes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from spinbot.backends.tts.base import Reference, ScriptSpeaker, ScriptVoice, SpeechBackend, Voice
from spinbot.errors import InputError, ParamsError
from spinbot.settings import get_settings
from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams, ignored_params
from spinbot.tasks.model_files import model_folders
from spinbot.tasks.speech_length import estimate_seconds, refuse_over_limit

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000
PEAK_CEILING = 0.95  # about -0.45 dBFS: no sample reaches full scale
# Silence kept between chunks: a sentence end, and a comma where a long sentence was split.
SENTENCE_PAUSE_S = 0.3
CLAUSE_PAUSE_S = 0.15
EDGE_PAD_S = 0.1  # silence before the first word and after the last
# Params the workflow itself acts on, whatever the backend.
WORKFLOW_PARAMS = frozenset({"narrator_voice", "ref_text", "target_rms", "cross_fade_duration"})
DEFAULT_NFE_STEP = 32  # TextToSpeechParams.nfe_step's default: the CPU budget below is counted in its steps


class TextToSpeechParams(TaskParams):
    LONG_TEXT_FIELDS = frozenset({"ref_text"})  # SPINBOT_MAX_REF_TEXT_CHARS, at admission
    MODEL_FOLDERS = model_folders("f5_to_tts")
    model: str = Field(
        default="F5TTS_v1_Base", description="Text-to-speech model: a folder in the models folder's F5-TTS/."
    )
    device: str = Field(default="cuda", description='Device the model runs on ("cuda", "cuda:1", "cpu").')
    # Bounds of the F5-TTS ComfyUI nodes the seed's workflow comes from: temperature 0..2, cfg_strength 0..10.
    temperature: float = Field(
        default=0.8, ge=0, le=2, description="Sampling temperature: lower is steadier, higher more expressive."
    )
    # The seed's table types speed as int (default 1); F5-TTS takes a float factor, so 0.9 is accepted too.
    speed: float = Field(default=1, gt=0.1, le=4, description="Speaking speed factor (1 is the voice's own pace).")
    target_rms: float = Field(default=0.1, gt=0, le=1, description="Loudness of the speech as its target RMS level.")
    cross_fade_duration: float = Field(
        default=0.15, ge=0, le=2, description="Seconds of cross-fade between spoken chunks."
    )
    nfe_step: int = Field(
        default=DEFAULT_NFE_STEP, ge=1, le=256, description="Denoising steps of the model: more is slower and cleaner."
    )
    cfg_strength: float = Field(
        default=2,
        ge=0,
        le=10,
        description="Guidance strength: how closely the speech follows the text and the reference voice.",
    )
    narrator_voice: str | None = Field(
        default=None,
        description="Another reference voice for this node: the id of one of your voice uploads (POST /v1/uploads), "
        "or with `spinbot run` a local file; unset: the job's voice sample.",
    )
    ref_text: str | None = Field(
        default=None, description="Transcript of that reference voice; unset: the job's ref_text."
    )
    # torch.manual_seed takes 0..2**64-1; 2**53-1 is the largest integer the web page's JavaScript holds exactly.
    seed: int = Field(
        default=290381, ge=0, le=2**53 - 1, description="Random seed: the same seed gives the same speech."
    )


def refuse_cpu_overwork(node_id: str, device: str, nfe_step: int, seconds: float, limit_s: float, about: str) -> None:
    """ParamsError, one line, where the native F5-TTS would run on the CPU (`device=cpu`: float32, hundreds of times
    a GPU's time a step) for more than the default nfe_step over the longest speech (SPINBOT_MAX_SPEECH_SECONDS):
    nfe_step 256 over 300 s there holds a worker's CPU for hours. More steps on the CPU come with shorter speech.
    Run at submission on the speech estimated and by the backend on its chunk plan."""
    if device.split(":")[0].strip() != "cpu":
        return
    work, limit = nfe_step * seconds, DEFAULT_NFE_STEP * limit_s
    if work > limit:
        raise ParamsError(
            f"{node_id}: nfe_step {nfe_step} on device=cpu over {about} is {work:,.0f} step-seconds, over the CPU's "
            f"{limit:,.0f} (nfe_step {DEFAULT_NFE_STEP} over SPINBOT_MAX_SPEECH_SECONDS): lower nfe_step or the "
            "script, or run it on a GPU (device=cuda)"
        )


@dataclass(frozen=True)
class Chunk:
    text: str
    pause_after: float  # seconds of silence before the next chunk


def plan_chunks(text: str, max_chars: int) -> list[Chunk]:
    """One chunk per sentence; a sentence longer than max_chars is split at commas (then between words)."""
    chunks = []
    for sentence in re.split(r"(?<=[.!?…])\s+", " ".join(text.split())):
        if not re.search(r"\w", sentence):
            continue  # stray punctuation: nothing to say
        pieces = _pack(re.split(r"(?<=[,;:])\s+", sentence), max_chars)
        chunks += [Chunk(p, CLAUSE_PAUSE_S) for p in pieces[:-1]] + [Chunk(pieces[-1], SENTENCE_PAUSE_S)]
    return chunks


def _pack(parts: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive parts up to max_chars; a part longer than that is split between words."""
    packed: list[str] = []
    for part in parts:
        for piece in _split_words(part, max_chars):
            if packed and len(packed[-1]) + 1 + len(piece) <= max_chars:
                packed[-1] += " " + piece
            else:
                packed.append(piece)
    return packed


def _split_words(part: str, max_chars: int) -> list[str]:
    pieces = [""]
    for word in part.split():
        if pieces[-1] and len(pieces[-1]) + 1 + len(word) > max_chars:
            pieces.append(word)
        else:
            pieces[-1] = f"{pieces[-1]} {word}".strip()
    return pieces


def _script_text(ctx: TaskContext) -> str:
    text = ctx.value("text")
    if not isinstance(text, str):
        raise InputError(f"{ctx.node_id}: the script text must be a string (got {type(text).__name__})")
    if not re.search(r"\w", text):
        raise InputError(f"{ctx.node_id}: the script text is empty: there is nothing to speak")
    return text


def _reference(ctx: TaskContext, params: TextToSpeechParams) -> Reference:
    """The narrator voice: the stored key in the params (admission resolved the upload id or local file the user
    gave to it), else the job's uploaded voice; and its transcript."""
    from spinbot.media.audio import load_voice

    if params.narrator_voice:
        try:
            path = ctx.fetch_user_file(params.narrator_voice, "voice", f"{ctx.node_id}.narrator_voice")
        except FileNotFoundError:
            message = f"{ctx.node_id}: narrator_voice '{params.narrator_voice}' is not in the artifact store"
            raise InputError(message) from None
    else:
        path = ctx.input_path("narrator_voice")
    audio, sr = load_voice(path, max_seconds=get_settings().max_voice_seconds)
    text = params.ref_text if params.ref_text is not None else ctx.values.get("ref_text") or ""
    return Reference(audio, sr, str(text))


def _speak(
    ctx: TaskContext,
    backend: SpeechBackend,
    voice: Voice,
    chunks: list[Chunk],
    params: TextToSpeechParams,
    limit_s: float,
) -> list[np.ndarray]:
    """Each chunk trimmed to its speech and given the silence its pauses need, half on either side of each join;
    cross-fades then overlap inside that silence instead of eating into the words. Stops as soon as the speech
    so far is longer than limit_s."""
    from spinbot.media.audio import active_bounds

    sr, fade = backend.sample_rate, params.cross_fade_duration
    pieces: list[np.ndarray] = []
    for i, chunk in enumerate(chunks):
        ctx.progress(0.95 * i / len(chunks), f"speaking chunk {i + 1}/{len(chunks)}")  # 0.95: resampling after
        audio = backend.synthesize(chunk.text, voice, params)
        start, end = active_bounds(audio, sr)
        if end <= start:
            raise InputError(f"{ctx.node_id}: the backend produced no sound for {chunk.text!r}")
        before = EDGE_PAD_S if i == 0 else chunks[i - 1].pause_after / 2 + fade / 2
        after = EDGE_PAD_S if i == len(chunks) - 1 else chunk.pause_after / 2 + fade / 2
        pieces.append(_with_margins(audio, start, end, int(before * sr), int(after * sr)))
        spoken = sum(len(p) for p in pieces) / sr - fade * (len(pieces) - 1)
        refuse_over_limit(
            spoken, limit_s, f"{ctx.node_id}: the script, after {i + 1} of {len(chunks)} chunks", estimated=False
        )
    return pieces


def _with_margins(audio: np.ndarray, start: int, end: int, before: int, after: int) -> np.ndarray:
    """audio[start:end] with `before` and `after` samples around it: the original signal where there is some
    (the decay of the last sound), zeros beyond."""
    lo, hi = max(0, start - before), min(len(audio), end + after)
    return np.concatenate(
        [
            np.zeros(before - (start - lo), np.float32),
            audio[lo:hi].astype(np.float32),
            np.zeros(after - (hi - end), np.float32),
        ]
    )


def _level_meta(audio: np.ndarray, target: float) -> dict[str, Any]:
    from spinbot.media.audio import rms

    achieved, warnings = rms(audio), []
    if abs(achieved / target - 1.0) > 0.02:
        warnings.append(
            f"target_rms {target} is too loud to reach under the {PEAK_CEILING} peak ceiling by "
            f"limiting alone; the speech has RMS {achieved:.3f}"
        )
        log.warning(warnings[-1])
    return {
        "sample_rate": OUTPUT_RATE,
        "rms": round(achieved, 4),
        "peak": round(float(np.abs(audio).max()), 4),
        "warnings": warnings,
    }


def run(ctx: TaskContext, params: TextToSpeechParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend
    from spinbot.media.audio import crossfade_concat, normalize_rms, resample, write_wav

    text = _script_text(ctx)
    limit_s = get_settings().max_speech_seconds
    # The script may come from an LLM that wrote more than it was asked for: refuse before speaking a word of it.
    refuse_over_limit(estimate_seconds(len(text), params.speed), limit_s, f"{ctx.node_id}: the script")
    backend = get_backend("f5_to_tts")
    voice = backend.prepare(_reference(ctx, params), params)
    if isinstance(backend, ScriptVoice):  # the lite voice in the language of the script's Latin-script text
        voice = backend.for_script(voice, text)
    if isinstance(backend, ScriptSpeaker):  # the model's own chunk plan and joins (F5-TTS)
        spoken = backend.speak_script(text, voice, params, lambda f, m: ctx.progress(0.95 * f, m))
        joined, joins, chunk_plan = spoken.audio, spoken.joins, spoken.chunks
    else:
        chunks = plan_chunks(text, backend.max_chunk_chars)
        pieces = _speak(ctx, backend, voice, chunks, params, limit_s)
        joined, joins = crossfade_concat(pieces, backend.sample_rate, params.cross_fade_duration)
        chunk_plan = [{"text": c.text, "pause_after": c.pause_after} for c in chunks]
    ctx.progress(0.95, "resampling and normalizing")
    audio = resample(joined, backend.sample_rate, OUTPUT_RATE)
    refuse_over_limit(len(audio) / OUTPUT_RATE, limit_s, f"{ctx.node_id}: the spoken script", estimated=False)
    audio = normalize_rms(audio, OUTPUT_RATE, params.target_rms, PEAK_CEILING)
    key = ctx.save("speech.wav", write_wav(ctx.output_path("speech.wav"), audio, OUTPUT_RATE), "audio/wav")
    ctx.progress(1.0, "speech written")
    honoured = backend.honoured | WORKFLOW_PARAMS
    voice_meta, level_meta = voice.as_meta(), _level_meta(audio, params.target_rms)
    meta = {
        "backend": backend.name,
        "honoured_params": sorted(honoured),
        "ignored_params": ignored_params(params, set(honoured)),
        **voice_meta,
        "chunks": chunk_plan,
        "joins_s": [round(j / backend.sample_rate, 3) for j in joins],
        **level_meta,
        "warnings": voice_meta.get("warnings", []) + level_meta["warnings"],
    }
    duration = round(len(audio) / OUTPUT_RATE, 3)
    return NodeOutput(artifacts={"audio": key}, values={"audio_duration": duration}, meta=meta)


TASK = TaskDef(name="f5_to_tts", params_model=TextToSpeechParams, run=run)
