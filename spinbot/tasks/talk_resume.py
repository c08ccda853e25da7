"""infinite_talk's window checkpoints: a render that stopped (a failed attempt, a worker or API process that died,
`spinbot run --resume`, a retry) continues from its last finished window instead of its first.

Each window's new frames are encoded as an H.264 chunk of their own (spinbot.media.chunks: the final video is the
chunks joined without a second encode). After each window, under jobs/<job>/<node>/resume/ in the artifact store
(so another process, with the same local folder or S3 bucket, can continue it):
- chunk-NNNNN.mp4: the window's chunk;
- state-NNNNN/backend.bin: what the backend's next window needs (TalkBackend.checkpoint), the latest window's only;
- manifest.json, written last: the fingerprint of everything the frames depend on, and each finished chunk's and
  the state's size and SHA-256;
- owner.json: the run of the node that writes the checkpoint now, claimed as a run starts. Two runs of one node can
  overlap (a process whose lease or queue lock ran out during a long window, still rendering, while another took
  the node over): the older one finds the claim gone before it writes its next window and stops (Superseded), so
  it never overwrites the newer run's chunks, state or manifest, nor leaves a checkpoint after the newer one
  succeeded. Were it to write in the moment between its check and its writes, every file is checked against the
  manifest's SHA-256 when loaded, so a mixed checkpoint is refused (started afresh), never joined.
A checkpoint whose fingerprint differs (other params, inputs, backend, backend numerics such as the native
backend's precision settings and model files, frame size or window plan), or whose files are missing, altered or
unreadable, is logged and removed, and the render starts at its first window. The node's success removes the
folder; so does the job's cancellation (it can never be retried), and `spinbot gc` what a superseded run wrote
after either (spinbot.control.lifecycle); deleting the job removes it with the job's folder. Its size is about
the video's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spinbot.backends.talk.base import TalkBackend
from spinbot.storage.base import artifact_key
from spinbot.tasks.base import RESUME_FOLDER, RunClaim, Superseded, TaskContext, TaskParams
from spinbot.tasks.windows import Window

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
OWNER = "owner.json"
FORMAT = 1  # of the manifest and its files; another format is another fingerprint
INPUTS = ("audio", "source_image")  # the input artifacts the frames depend on


class CheckpointUnusable(ValueError):
    """A stored checkpoint that cannot continue this render."""


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.mp4"


def fingerprint(
    ctx: TaskContext,
    params: TaskParams,
    backend: str,
    numerics: Mapping[str, Any],
    windows: Sequence[Window],
    shape: tuple[int, ...],
    fps: int,
) -> str:
    """A digest of everything the frames depend on: the node's params, its inputs (keys and content), the backend
    and its numerics (TalkBackend.numerics: precision settings, model files), the window plan, the frame size and
    rate."""
    described = {
        "format": FORMAT,
        "params": params.model_dump(mode="json"),
        "inputs": {name: [ctx.artifacts[name], file_sha256(ctx.input_path(name))] for name in INPUTS},
        "backend": backend,
        "numerics": numerics,
        "windows": [[w.start, w.end, w.new_start, w.new_end] for w in windows],
        "frame_size": [shape[1], shape[0]],
        "fps": fps,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WindowCheckpoints:
    """The checkpoint of one render: `load` what an earlier attempt finished, `save` each window, `clear`."""

    def __init__(self, ctx: TaskContext, fingerprint: str, windows: int, numerics: Mapping[str, Any] | None = None):
        self.ctx = ctx
        self.fingerprint = fingerprint
        self.numerics = dict(numerics or {})  # kept in the manifest, to say what changed when they differ
        self.windows = windows
        self.folder = ctx.output_path(RESUME_FOLDER)
        self.folder.mkdir(exist_ok=True)
        self.chunks: list[dict[str, Any]] = []  # size and sha256 of each finished window's chunk, in order
        self.ignored: str | None = None  # why a stored checkpoint was not used
        self.warning: str | None = None  # why checkpoints stopped being saved
        self._state_folder: str | None = None
        self.claim = RunClaim(ctx.store, self._key(OWNER))  # this run's claim on the checkpoint

    @property
    def done(self) -> int:
        """The windows finished (by an earlier attempt, then by this one)."""
        return len(self.chunks)

    def chunk_path(self, index: int) -> Path:
        return self.folder / chunk_name(index)

    def chunk_paths(self) -> list[Path]:
        return [self.chunk_path(index) for index in range(self.done)]

    def _key(self, name: str) -> str:
        return artifact_key(self.ctx.job_id, self.ctx.node_id, f"{RESUME_FOLDER}/{name}")

    # ---- resuming --------------------------------------------------------------------------------------------------
    def resume(self, backend: TalkBackend, state: Any) -> int:
        """Continue the backend from the stored checkpoint, if one fits; returns the windows finished before."""
        try:
            data = self._load()
            if data is not None and self.done < self.windows:  # every window done: no state to continue from
                backend.restore(state, data)
        except Exception as err:  # noqa: BLE001 - whatever is wrong with it, a checkpoint only ever saves time
            self.reject(err)
        else:
            if data is None:
                self.clear()  # what an attempt left before its first manifest
        try:
            self._claim()
        except Exception as err:  # noqa: BLE001 - the store is away: render on, without checkpoints
            self._stop_saving(err)
        return self.done

    def _claim(self) -> None:
        """This run writes the checkpoint from now on: an older run still rendering stops at its next save."""
        self.claim.take()

    def _confirm_claim(self) -> None:
        """Superseded unless the checkpoint is still this run's (the claim is gone once a newer run claimed it, or
        cleared it as it succeeded)."""
        if not self.claim.held():
            raise Superseded(f"node '{self.ctx.node_id}' of job {self.ctx.job_id}: another run took it over")

    def reject(self, why: Exception | str) -> None:
        """Forget the stored checkpoint: logged, removed, and the render starts at its first window."""
        self.ignored = str(why)
        log.warning(
            "infinite_talk checkpoint ignored and removed",
            extra={"job_id": self.ctx.job_id, "node_id": self.ctx.node_id, "reason": str(why)},
        )
        self.chunks, self._state_folder = [], None
        try:
            self.clear()
        except Exception as err:  # noqa: BLE001 - the next save overwrites the manifest anyway
            log.warning("infinite_talk checkpoint not removed", extra={"error": str(err)})

    def _load(self) -> bytes | None:
        """The backend's state (b"" when every window is finished), the finished chunks fetched and checked into the
        work folder; None when there is no checkpoint."""
        store = self.ctx.store
        if not store.exists(self._key(MANIFEST)):
            return None
        try:
            manifest = json.loads(store.get_bytes(self._key(MANIFEST)))
            done, chunks, state = manifest["done"], manifest["chunks"], manifest["state"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointUnusable(f"unreadable manifest ({err})") from None
        if manifest.get("format") != FORMAT or manifest.get("fingerprint") != self.fingerprint:
            raise CheckpointUnusable(_mismatch(manifest.get("numerics"), self.numerics))
        if not isinstance(done, int) or not 0 < done <= self.windows or len(chunks) != done:
            raise CheckpointUnusable(f"{done!r} windows done of {self.windows}, {len(chunks)} chunks")
        for index, entry in enumerate(chunks):
            path = self.chunk_path(index)
            store.download(self._key(chunk_name(index)), path)
            _check(path.read_bytes(), entry, chunk_name(index))
        data = b""
        if done < self.windows:
            if not isinstance(state, dict):
                raise CheckpointUnusable("no backend state for the next window")
            data = store.get_bytes(self._key(f"{state['folder']}/backend.bin"))
            _check(data, state, "the backend state")
            self._state_folder = state["folder"]
        self.chunks = list(chunks)
        return data

    # ---- saving ----------------------------------------------------------------------------------------------------
    def save(self, index: int, chunk: Path, backend_state: bytes | None) -> None:
        """Window `index` is finished: its chunk, then the backend's state (None after the last window), then the
        manifest that names them. A store that fails stops the checkpoints (a warning), never the render."""
        assert index == self.done, f"window {index} saved after {self.done} windows"
        data = chunk.read_bytes()
        self.chunks.append({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        if self.warning is not None:
            return
        try:
            self._save(index, data, backend_state)
        except Superseded:
            raise  # another run renders this node now: this one stops here
        except Exception as err:  # noqa: BLE001 - the render goes on; its next attempt starts over
            self._stop_saving(err)

    def _stop_saving(self, err: Exception) -> None:
        log.warning("infinite_talk checkpoints stopped", extra={"error": str(err)}, exc_info=True)
        self.warning = f"window checkpoints stopped (a new attempt would start over): {err}"

    def _save(self, index: int, chunk: bytes, backend_state: bytes | None) -> None:
        store = self.ctx.store
        self._confirm_claim()  # before any write: a superseded run must not touch the newer run's files
        store.put_bytes(self._key(chunk_name(index)), chunk, content_type="video/mp4")
        state, folder = None, None
        if backend_state is not None:
            folder = f"state-{index:05d}"
            store.put_bytes(self._key(f"{folder}/backend.bin"), backend_state)
            digest = hashlib.sha256(backend_state).hexdigest()
            state = {"folder": folder, "size": len(backend_state), "sha256": digest}
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "numerics": self.numerics,
            "windows": self.windows,
            "done": self.done,
            "chunks": self.chunks,
            "state": state,
        }
        store.put_bytes(self._key(MANIFEST), json.dumps(manifest).encode(), content_type="application/json")
        if self._state_folder is not None and self._state_folder != folder:
            store.delete_prefix(self._key(self._state_folder) + "/")
        self._state_folder = folder

    def clear(self) -> None:
        """Remove the stored checkpoint (the node succeeded, or it cannot be used)."""
        self.ctx.discard(RESUME_FOLDER)


def _mismatch(stored: Any, current: dict[str, Any]) -> str:
    """Why the fingerprints differ, as far as the manifest tells: the numerics' changed keys, named, when those
    differ (a worker with other SPINBOT_TALK_* settings or model files), else the rest."""
    if isinstance(stored, dict) and stored != current:
        changed = sorted(key for key in stored.keys() | current.keys() if stored.get(key) != current.get(key))
        return f"made with other backend numerics (changed: {', '.join(changed)})"
    return "made with other params, inputs, backend or frame size"


def _check(data: bytes, entry: dict[str, Any], what: str) -> None:
    if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise CheckpointUnusable(f"{what} is not what the manifest says")
