"""The native f5_to_tts backend: F5-TTS voice cloning through the f5-tts package's own model classes.

F5-TTS has its own long-text inference (f5_tts.infer.utils_infer.infer_process), and this backend follows it step
by step instead of the lite workflow's sentence chunks:
- the reference: silence trimmed from its edges, at most 12 s, 50 ms of silence appended, raised to target_rms
  when quieter (the output is lowered by the same factor), resampled to 24 kHz; its transcript ends in ". ";
- the plan: chunk_text(script, max_chars), max_chars from the reference's characters per second and the
  22 s the model handles in one go (reference included), scaled by speed;
- each chunk: the reference's transcript + the chunk as text, a duration of reference frames + the reference's
  frames per byte x the chunk's bytes / speed (0.3 for a chunk under 10 bytes, as the package does);
- sampling: CFM.sample with nfe_step Euler steps, sway sampling -1, cfg_strength, and the seed, which seeds the
  initial noise of every chunk the same way whatever the batch (CFM.sample re-seeds per item);
- the chunks' mel spectrograms through Vocos, joined with the package's linear cross-fade of cross_fade_duration.
Unlike the package (one thread per chunk, one chunk per forward pass) the chunks of a job go through the model
in batches, packed without their padding (packed.py), so one chunk's samples do not depend on the batch it is in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinbot.backends.tts.base import Reference, SpokenScript
from spinbot.errors import BackendUnavailable, InputError

SAMPLE_RATE = 24000
MAX_REF_S = 12.0  # preprocess_ref_audio_text clips longer references
REF_TAIL_S = 0.05  # ... and appends this much silence
SILENCE_DBFS = -42.0  # remove_silence_edges' threshold
MODEL_WINDOW_S = 22.0  # infer_process: reference + chunk fit in about this many seconds
SHORT_CHUNK_BYTES, SHORT_CHUNK_SPEED = 10, 0.3  # infer_batch_process slows very short chunks down
SWAY_SAMPLING_COEF = -1.0  # the package's default
# Frames (padded, before the CFG doubling) per forward pass: 30 s of speech at a 10 s reference is about 6,000.
BATCH_FRAMES = {"cuda": 16384, "cpu": 4096}
TEMPERATURE_NOTE = (
    "temperature: F5-TTS samples by a flow-matching ODE (Euler steps from seeded noise), which has "
    "no sampling temperature; nfe_step, cfg_strength and seed shape the result instead"
)

_sample_lock = threading.Lock()  # CFM.sample seeds torch's global generator: one job samples at a time


@dataclass(frozen=True)
class F5Voice:
    """The reference as F5-TTS consumes it: 24 kHz audio (raised to target_rms if quieter) and its transcript."""

    audio: np.ndarray
    text: str  # as infer_batch_process passes it: ". " (or "。") at the end, then one more space
    gain: float  # output multiplier that undoes the reference's raise (1.0 when it was loud enough)
    max_chars: int
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def as_meta(self) -> dict[str, Any]:
        return {
            "reference": {
                "seconds": round(self.seconds, 3),
                "text": self.text.strip(),
                "gain": round(self.gain, 4),
                "notes": self.notes,
            },
            "chunking": {"method": "f5_tts.infer.utils_infer.chunk_text", "max_chars": self.max_chars},
            "notes": [TEMPERATURE_NOTE],
        }


@dataclass(frozen=True)
class ChunkJob:
    index: int
    text: str
    frames: int  # total frames sampled: reference + this chunk
    ref_frames: int


class NativeF5Backend:
    name = "native"
    sample_rate = SAMPLE_RATE
    honoured = frozenset(
        {
            "model",
            "device",
            "speed",
            "nfe_step",
            "cfg_strength",
            "seed",
            "narrator_voice",
            "ref_text",
            "target_rms",
            "cross_fade_duration",
        }
    )
    max_chunk_chars = 135  # chunk_text's default; the plan uses the reference-derived max_chars instead

    def prepare(self, reference: Reference, params: Any) -> F5Voice:
        return prepare_reference(reference, params.target_rms, params.speed)

    def synthesize(self, text: str, voice: F5Voice, params: Any) -> np.ndarray:
        """One chunk, as the SpeechBackend protocol has it."""
        return self.speak_script(text, voice, params, lambda f, m: None).audio

    def speak_script(
        self, text: str, voice: F5Voice, params: Any, progress: Callable[[float, str], None]
    ) -> SpokenScript:
        from spinbot.backends.tts.f5.loading import Speedups, load_models
        from spinbot.settings import get_settings
        from spinbot.tasks.tts import refuse_cpu_overwork

        settings = get_settings()
        models = load_models(
            params.model,
            settings.models_dir,
            run_device(params.device),
            Speedups(compile=settings.tts_compile, fp8=settings.tts_fp8, attention=settings.tts_attention),
        )
        chunks = plan(text, voice, params.speed, models.mel["hop_length"])
        seconds = refuse_long_plan(
            chunks, models.mel["hop_length"], params.cross_fade_duration, settings.max_speech_seconds
        )
        about = f"the {seconds:.0f} s of speech its chunks plan"
        refuse_cpu_overwork("f5_to_tts", params.device, params.nfe_step, seconds, settings.max_speech_seconds, about)
        waves = synthesize_chunks(models, voice, chunks, params, progress)
        audio, joins = crossfade_linear(waves, int(params.cross_fade_duration * SAMPLE_RATE))
        meta = [
            {"text": c.text, "frames": c.frames - c.ref_frames, "seconds": round(len(w) / SAMPLE_RATE, 3)}
            for c, w in zip(chunks, waves)
        ]
        return SpokenScript(audio * voice.gain, meta, joins)


def run_device(name: str) -> Any:
    """The torch device f5_to_tts's `device` param names, if this process has it (admission asks it too). Only
    cpu and the CUDA GPUs torch sees here: torch.device also takes "meta" (no data: the run would fail deep in the
    model), "mps" and "cuda:7" on a one-GPU machine, each failing only after the nodes before this one ran."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = ", ".join(["cpu", *(["cuda"] if gpus else []), *(f"cuda:{i}" for i in range(gpus))])
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise InputError(
            f"f5_to_tts: device '{name}' is not a device this backend runs on (cpu, cuda, cuda:1, ...); "
            f"this machine has: {here}"
        )
    if device.type == "cuda" and not gpus:
        raise BackendUnavailable(
            f"f5_to_tts native: device '{name}' asked for but torch sees no CUDA GPU; "
            "set f5_to_tts.device=cpu (slow) or run on a GPU worker"
        )
    if device.type == "cuda" and (device.index or 0) >= gpus:  # a GPU number this machine lacks: the input's fault
        raise InputError(f"f5_to_tts: device '{name}' is not on this machine ({gpus} CUDA GPU(s)); it has: {here}")
    return device


# ---- the reference ------------------------------------------------------------------------------------------------


def prepare_reference(reference: Reference, target_rms: float, speed: float) -> F5Voice:
    from spinbot.media.audio import resample, rms

    if not reference.text.strip():
        raise InputError(
            "f5_to_tts native: ref_text (the transcript of narrator_voice) is empty; F5-TTS needs it "
            "and this backend does not transcribe"
        )
    audio, notes = resample(reference.audio, reference.sample_rate, SAMPLE_RATE), []
    start, end = trim_silence_edges(audio)
    if end <= start:
        raise InputError("f5_to_tts native: the narrator voice is silent")
    audio = audio[start:end]
    if len(audio) > MAX_REF_S * SAMPLE_RATE:
        audio = audio[: _quietest_cut(audio)]
        notes.append(
            f"reference clipped to {len(audio) / SAMPLE_RATE:.2f} s (F5-TTS takes at most {MAX_REF_S:g} "
            "s); ref_text should be the transcript of that part"
        )
    audio = np.concatenate([audio, np.zeros(int(REF_TAIL_S * SAMPLE_RATE), np.float32)])
    level = rms(audio)
    gain = level / target_rms if level < target_rms else 1.0
    audio = (audio / gain).astype(np.float32)
    text = f5_ref_text(reference.text)
    seconds = len(audio) / SAMPLE_RATE
    # infer_process: max_chars from the reference's bytes per second, times the seconds left in the model's window.
    max_chars = int(len(text.encode()) / seconds * (MODEL_WINDOW_S - seconds) * speed)
    # infer_batch_process then adds a space after a 1-byte last character (so "... ." ends in two spaces).
    text = text + " " if len(text[-1].encode()) == 1 else text
    return F5Voice(audio, text, gain, max(max_chars, 1), notes)


def trim_silence_edges(audio: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> tuple[int, int]:
    """remove_silence_edges: pydub's detect_leading_silence on the audio and on its reverse, so [start, end) runs
    from the first to the last 10 ms window (stepped from each end) at or above threshold_dbfs; (0, 0) if silent."""
    lead = _leading_silence(audio, threshold_dbfs)
    if lead >= len(audio):
        return 0, 0
    return lead, len(audio) - _leading_silence(audio[::-1], threshold_dbfs)


def _leading_silence(audio: np.ndarray, threshold_dbfs: float) -> int:
    step, floor = SAMPLE_RATE // 100, 10 ** (threshold_dbfs / 20)
    for start in range(0, len(audio), step):
        if np.sqrt(np.mean(np.square(audio[start : start + step], dtype=np.float64))) >= floor:
            return start
    return len(audio)


def _quietest_cut(audio: np.ndarray) -> int:
    """The end of the quietest 50 ms frame between 6 and 12 s: where preprocess_ref_audio_text looks for a pause."""
    frame = SAMPLE_RATE // 20
    lo, hi = int(6 * SAMPLE_RATE) // frame, int(MAX_REF_S * SAMPLE_RATE) // frame
    energy = [float(np.mean(np.square(audio[i * frame : (i + 1) * frame]))) for i in range(lo, hi)]
    return (lo + int(np.argmin(energy)) + 1) * frame


def f5_ref_text(text: str) -> str:
    """preprocess_ref_audio_text's ending: ". " (or "。")."""
    text = text.strip()
    if text.endswith("。"):
        return text
    return text + (" " if text.endswith(".") else ". ")


# ---- the chunk plan -----------------------------------------------------------------------------------------------


def plan(text: str, voice: F5Voice, speed: float, hop_length: int) -> list[ChunkJob]:
    from f5_tts.infer.utils_infer import chunk_text

    ref_frames = len(voice.audio) // hop_length
    ref_bytes = len(voice.text.encode())
    jobs = []
    for i, chunk in enumerate(chunk_text(" ".join(text.split()), max_chars=voice.max_chars)):
        size = len(chunk.encode())
        local_speed = SHORT_CHUNK_SPEED if size < SHORT_CHUNK_BYTES else speed
        jobs.append(ChunkJob(i, chunk, ref_frames + int(ref_frames / ref_bytes * size / local_speed), ref_frames))
    if not jobs:
        raise InputError("f5_to_tts native: the script has no text to speak")
    return jobs


def refuse_long_plan(chunks: list[ChunkJob], hop_length: int, cross_fade_s: float, limit_s: float) -> float:
    """The speech the plan would make (returned), against SPINBOT_MAX_SPEECH_SECONDS before any sampling. Each chunk
    is timed by the reference's frames per byte of ref_text, which the client sets (ref_text "a" over 12 s of voice:
    280 frames a byte), so admission's estimate from the script's characters bounds nothing here, and what was
    spoken is known only after every chunk was sampled (nfe_step 256 and both guidance passes over 2,700 s: hours
    of a GPU)."""
    from spinbot.tasks.speech_length import refuse_over_limit

    generated = sum(c.frames - c.ref_frames for c in chunks) * hop_length / SAMPLE_RATE
    what = (
        "the script as this narrator voice and ref_text would speak it (F5-TTS times each chunk by the voice's "
        "seconds per character of ref_text: give its whole transcript)"
    )
    seconds = generated - cross_fade_s * (len(chunks) - 1)
    refuse_over_limit(seconds, limit_s, what)
    return seconds


def batches(chunks: list[ChunkJob], budget: int) -> list[list[ChunkJob]]:
    """Chunks sorted by length and packed so that batch size x longest chunk stays within the frame budget
    (similar lengths together: little padding)."""
    out: list[list[ChunkJob]] = []
    for chunk in sorted(chunks, key=lambda c: c.frames):
        if out and (len(out[-1]) + 1) * chunk.frames <= budget:
            out[-1].append(chunk)
        else:
            out.append([chunk])
    return out


# ---- sampling -----------------------------------------------------------------------------------------------------


def synthesize_chunks(
    models: Any, voice: F5Voice, chunks: list[ChunkJob], params: Any, progress: Callable[[float, str], None]
) -> list[np.ndarray]:
    """Every chunk's waveform, in plan order."""
    import torch

    waves: dict[int, np.ndarray] = {}
    groups = batches(chunks, BATCH_FRAMES.get(models.device.type, BATCH_FRAMES["cpu"]))
    with torch.inference_mode():
        cond = reference_mel(models, voice)
        for n, group in enumerate(groups):
            progress(n / len(groups), f"sampling {len(group)} chunk(s), batch {n + 1}/{len(groups)}")
            mels = sample_batch(models, cond, voice, group, params)
            for chunk, mel in zip(group, mels):
                waves[chunk.index] = models.vocoder.decode(mel.float().T[None]).squeeze(0).cpu().numpy()
    return [waves[c.index].astype(np.float32) for c in chunks]


def reference_mel(models: Any, voice: F5Voice) -> Any:
    """(1, frames, n_mels) in float32: the model's own mel spectrogram of the reference."""
    import torch

    wave = torch.from_numpy(voice.audio)[None].to(models.device)
    return models.cfm.mel_spec(wave).permute(0, 2, 1)


def sample_batch(models: Any, cond: Any, voice: F5Voice, group: list[ChunkJob], params: Any) -> list[Any]:
    """The generated frames (after the reference) of each chunk, as (frames, n_mels) tensors."""
    import torch
    from f5_tts.model.utils import convert_char_to_pinyin

    from spinbot.backends.tts.f5.packed import known_lengths

    text = convert_char_to_pinyin([voice.text + c.text for c in group])
    ref_frames = cond.shape[1]
    # CFM.sample lengthens a duration shorter than the text (+1): the same rule gives each chunk's end, which is
    # also the length of its real rows in the batch (known_lengths: the packed blocks run those frames only)
    ends = [max(len(t) + 1, ref_frames + 1, c.frames) for t, c in zip(text, group)]
    duration = torch.tensor([c.frames for c in group], device=models.device)
    with _sample_lock, known_lengths(models.cfm.transformer, ends):
        out, _ = models.cfm.sample(
            cond=cond.expand(len(group), -1, -1),
            text=text,
            duration=duration,
            lens=torch.full((len(group),), ref_frames, device=models.device),
            steps=params.nfe_step,
            cfg_strength=params.cfg_strength,
            sway_sampling_coef=SWAY_SAMPLING_COEF,
            seed=params.seed,
        )
    return [out[i, ref_frames:end] for i, end in enumerate(ends)]


def crossfade_linear(waves: list[np.ndarray], overlap: int) -> tuple[np.ndarray, list[int]]:
    """infer_batch_process's join: each chunk overlaps the previous one by `overlap` samples with linear fades.
    Returns the audio and the sample at the centre of each join."""
    out, joins = waves[0], []
    for wave in waves[1:]:
        n = min(overlap, len(out), len(wave))
        if n <= 0:
            joins.append(len(out))
            out = np.concatenate([out, wave])
            continue
        mixed = out[-n:] * np.linspace(1, 0, n) + wave[:n] * np.linspace(0, 1, n)
        joins.append(len(out) - n // 2)
        out = np.concatenate([out[:-n], mixed.astype(np.float32), wave[n:]])
    return out.astype(np.float32), joins
