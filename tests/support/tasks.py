"""Run one python-plane task the way a worker does: inputs uploaded to a local store, then execute_task."""

from __future__ import annotations

from pathlib import Path

from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.media.audio import load_audio, write_wav
from spinbot.samples import BECKETT_TRANSCRIPT, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks.base import NodeOutput


def run_talk(folder: Path, image: Path, audio: Path, live_output: bool = True, **params) -> tuple[NodeOutput, Path]:
    """The infinite_talk task on these inputs; returns its output and the local path of its video."""
    store = LocalStore(folder / "store")
    store.upload(image, "inputs/" + image.name)
    store.upload(audio, "inputs/" + audio.name)
    request = TaskRequest(
        job_id="job1",
        node_id="infinite_talk",
        task="infinite_talk",
        params=params,
        artifacts={"source_image": "inputs/" + image.name, "audio": "inputs/" + audio.name},
        live_output=live_output,
    )
    out = execute_task(request, store, workdir_root=folder)
    return out, store.path(out.artifacts["video"])


SPEECH_VOICE_KEY = "jobs/job1/inputs/narrator_voice.wav"


def store_with_voice(folder: Path) -> LocalStore:
    """A local store holding the sample voice as job1's narrator voice (SPEECH_VOICE_KEY), for run_speech."""
    store = LocalStore(folder / "store")
    store.upload(voice_path(), SPEECH_VOICE_KEY)
    return store


def run_speech(store: LocalStore, text: str) -> NodeOutput:
    """The f5_to_tts task (the configured backend, default params) speaking `text` in the sample voice."""
    request = TaskRequest(
        job_id="job1",
        node_id="f5_to_tts",
        task="f5_to_tts",
        values={"text": text, "ref_text": BECKETT_TRANSCRIPT},
        artifacts={"narrator_voice": SPEECH_VOICE_KEY},
    )
    return execute_task(request, store)


def write_beckett_excerpt(path: Path) -> Path:
    """The first 2.5 s of the sample voice ("Ever tried. Ever failed."), written to `path`: speech for a short
    run_talk."""
    audio, sr = load_audio(voice_path())
    return write_wav(path, audio[: int(2.5 * sr)], sr)
