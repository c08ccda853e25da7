"""Every check a job can fail before any of its work starts, run by Runner.create_job for the CLI and the API alike.

A job that would fail on its inputs is refused at submission with one line (CLI exit 2, API 400) and nothing is
stored; it is never found out by a node after others ran. The checks, in order: text lengths, the length of the
speech the script would make, what the configured backends need of their params, the stored files that params
name, the input files themselves (a portrait that decodes, a narrator voice long enough and not silent), and the
size of the video the job would make (spinbot.control.budgets).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from spinbot.backends.registry import backend_name
from spinbot.backends.requirements import REQUIREMENTS, check_backend_params
from spinbot.control.budgets import VideoBudget
from spinbot.control.requests import JobRequest
from spinbot.control.script import ScriptParams
from spinbot.errors import BackendUnavailable, InputError, ParamsError, echo
from spinbot.media.sandbox import run_checked
from spinbot.pipelines.spec import PipelineSpec
from spinbot.settings import Settings
from spinbot.storage.base import ArtifactStore, check_key
from spinbot.storage.uploads import UPLOAD_ID, upload_folder, upload_key
from spinbot.tasks.base import TaskParams, unstorable
from spinbot.tasks.catalog import load_task
from spinbot.tasks.speech_length import estimate_seconds, refuse_over_limit, words_to_chars
from spinbot.tasks.talk import InfiniteTalkParams, check_talk_work
from spinbot.tasks.tts import TextToSpeechParams, refuse_cpu_overwork
from spinbot.tasks.windows import frame_count

TALK_TRANSFORMER_PARAMS = ("wan_video_model", "infinitetalk_model")  # the 14B transformer's two files
TALK_CPU_MAX_BYTES = 10**9  # full size: about 38 GB in bfloat16 (16 GB in FP8); the synthetic tiny ones: 16 MB


class Admission:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.store = store

    def check(
        self,
        spec: PipelineSpec,
        params: dict[str, dict[str, Any]],
        request: JobRequest,
        local_voices: dict[str, Path] | None = None,
    ) -> None:
        """Raise InputError (or ParamsError) with one line for the first thing wrong with the job. `params` as
        resolve_voices gave them back, with the local files it found (`local_voices`)."""
        nodes = {n.id: load_task(n.task).params_model.model_validate(params.get(n.id, {})) for n in spec.nodes}
        self.check_texts(spec, nodes, request)
        speech = self.check_speech_length(spec, nodes)
        self.check_windows(spec, nodes, speech)
        self.check_backends(spec, nodes, request)
        self.check_model_files(spec, nodes)
        self.check_files(spec, nodes, request, local_voices)
        # last: it reads the portrait's header, which check_files has found to be an image
        VideoBudget(self.settings, self.store).check(spec, nodes, request, speech)

    # ---- texts ----------------------------------------------------------------------------------------------------
    # `nodes`: each node's params, of its task's own model (ScriptParams, TextToSpeechParams, ...), picked by task.
    def check_texts(self, spec: PipelineSpec, nodes: dict[str, Any], request: JobRequest) -> None:
        if not request.prompt.strip() and not any(
            isinstance(given, ScriptParams) and (given.text or "").strip() for given in nodes.values()
        ):
            raise InputError("prompt is empty: give a prompt, or your own script (script.text)")
        s = self.settings
        _refuse_long(request.prompt, s.max_prompt_chars, "prompt", "SPINBOT_MAX_PROMPT_CHARS")
        _refuse_long(request.ref_text or "", s.max_ref_text_chars, "ref_text", "SPINBOT_MAX_REF_TEXT_CHARS")
        for node_id, given in nodes.items():
            if isinstance(given, ScriptParams) and given.text:
                _refuse_long(given.text, s.max_script_chars, f"{node_id}.text", "SPINBOT_MAX_SCRIPT_CHARS")
                if given.text.strip() and not re.search(r"\w", given.text):  # what f5_to_tts would find
                    raise InputError(f"{node_id}.text has no letters or digits: there is nothing to speak")
            if isinstance(given, TextToSpeechParams) and given.ref_text:
                _refuse_long(given.ref_text, s.max_ref_text_chars, f"{node_id}.ref_text", "SPINBOT_MAX_REF_TEXT_CHARS")

    def check_speech_length(self, spec: PipelineSpec, nodes: dict[str, Any]) -> dict[str, float]:
        """Each speech node's script (the user's text, or the words asked of the LLM) at that node's speed; returns
        the seconds estimated for each."""
        estimates: dict[str, float] = {}
        for node_id, speech in nodes.items():
            if not isinstance(speech, TextToSpeechParams):
                continue
            script = next((a for a in reversed(spec.ancestors(node_id)) if isinstance(nodes[a], ScriptParams)), None)
            if script is None:
                continue  # a pipeline whose text comes from elsewhere: the task checks it when it runs
            given = nodes[script]
            assert isinstance(given, ScriptParams)
            if given.text:
                chars, what = float(len(given.text)), f"{script}.text"
            else:
                chars, what = words_to_chars(given.words), f"{script}.words ({given.words} words asked of the LLM)"
            estimates[node_id] = estimate_seconds(chars, speech.speed)
            refuse_over_limit(estimates[node_id], self.settings.max_speech_seconds, what)
            if backend_name("f5_to_tts", self.settings) == "native":
                about = f"about {estimates[node_id]:.0f} s of speech ({what})"
                limit = self.settings.max_speech_seconds
                refuse_cpu_overwork(node_id, speech.device, speech.nfe_step, estimates[node_id], limit, about)
        return estimates

    def check_windows(self, spec: PipelineSpec, nodes: dict[str, Any], speech: dict[str, float]) -> None:
        """A talking head's windows, and the denoising they cost, for the speech estimated before it (infinite_talk
        checks them again on the speech it gets)."""
        for node_id, talk in nodes.items():
            seconds = max((speech[a] for a in spec.ancestors(node_id) if a in speech), default=None)
            if not isinstance(talk, InfiniteTalkParams) or seconds is None:
                continue
            frames, about = frame_count(seconds, talk.fps), f"about {seconds:.0f} s of speech at {talk.fps} fps"
            check_talk_work(node_id, max(frames, 1), talk, self.settings.max_talk_frame_steps, about)

    def check_backends(self, spec: PipelineSpec, nodes: dict[str, TaskParams], request: JobRequest) -> None:
        values = {"ref_text": request.ref_text or ""}
        for node in spec.nodes:
            if node.task in REQUIREMENTS:
                backend = backend_name(node.task, self.settings)
                check_backend_params(node.task, backend, node.id, nodes[node.id], values)

    def check_model_files(self, spec: PipelineSpec, nodes: dict[str, TaskParams]) -> None:
        """Where tasks run in this process (no SPINBOT_REDIS_URL: the embedded queue), a native backend can run here
        (the gpu extra installed, a CUDA GPU for f5_to_tts.device=cuda and for full-size InfiniteTalk files) and its
        required model files are present, so a job does not fail at that node after the ones before it ran.
        (Workers check their tasks' files, layouts included, when they start: spinbot.worker.main.)"""
        from spinbot.models.layouts import layout_for

        here = self.native_tasks_here()
        for node in spec.nodes:
            if node.task not in here:
                continue
            try:
                layout = layout_for(node.task)  # imports torch and the backend's packages
            except ImportError as err:  # a CPU install (`make demo`) with a native backend chosen
                raise BackendUnavailable(
                    f"{node.id}: the native backend needs the gpu extra (pip install -e '.[gpu]'): {err}"
                ) from None
            if node.task == "f5_to_tts":  # its `device` param: this process runs it, so its GPUs decide
                from spinbot.backends.tts.f5.backend import run_device

                run_device(nodes[node.id].device)  # type: ignore[attr-defined]  # TextToSpeechParams
            files = layout.files(nodes[node.id], self.settings.models_dir)
            missing = [f for f in files if f.required and not f.present]
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise BackendUnavailable(
                    f"{node.id}: the native backend lacks model files in SPINBOT_MODELS_DIR={self.settings.models_dir}"
                    f": {missing[0].relpath}{more} (`spinbot models pull` fetches them{missing[0].why_missing()})"
                )
            self.refuse_unreadable(node.id, files)
            if node.task == "infinite_talk":
                self.refuse_talk_on_cpu(node.id, files)

    def refuse_unreadable(self, node_id: str, files: list[Any]) -> None:
        """A safetensors file whose header does not read (a download cut short, an HTML page, a GGUF model under
        the name) is refused now, not when its node loads it after the nodes before it ran. Headers only: ms."""
        from spinbot.models.compare import unreadable_safetensors

        bad = unreadable_safetensors([f.path for f in files if f.present])
        if bad:
            more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
            raise BackendUnavailable(
                f"{node_id}: the native backend cannot use a model file in SPINBOT_MODELS_DIR="
                f"{self.settings.models_dir}: {bad[0].line(self.settings.models_dir)}{more} (`spinbot models check` "
                "checks them all)"
            )

    def native_tasks_here(self) -> list[str]:
        """The tasks check_model_files checks: a native backend configured, and tasks run in this process."""
        if self.settings.redis_url:
            return []
        from spinbot.models.layouts import LAYOUTS

        return [task for task in LAYOUTS if backend_name(task, self.settings) == "native"]

    def import_native(self) -> None:
        """Import what check_model_files imports (torch and each native backend's packages: seconds), so that no
        submission waits for it; the API runs this once as it starts (spinbot.api.readiness). An ImportError (a CPU
        install) is raised; submissions then refuse the job with it."""
        from spinbot.models.layouts import layout_for

        for task in self.native_tasks_here():
            layout = layout_for(task)
            layout.files(load_task(task).params_model(), self.settings.models_dir)  # the modules it imports itself
            if task == "f5_to_tts":
                import spinbot.backends.tts.f5.backend  # noqa: F401 - check_model_files asks it about `device`

    def refuse_talk_on_cpu(self, node_id: str, files: list[Any]) -> None:
        """The backend runs on the CPU where torch sees no CUDA GPU: with full-size transformer files (the 14B model)
        a job would take days, so it is refused unless SPINBOT_TALK_ALLOW_CPU is set. Tiny checkpoints (tests,
        `python -m spinbot.models.synth`) run in seconds and pass."""
        if self.settings.talk_allow_cpu:
            return
        import torch

        if torch.cuda.is_available():
            return
        size = sum(f.path.stat().st_size for f in files if f.param in TALK_TRANSFORMER_PARAMS and f.present)
        if size > TALK_CPU_MAX_BYTES:
            raise BackendUnavailable(
                f"{node_id}: the native infinite_talk backend needs a CUDA GPU; none is visible (its "
                f"{size / 1e9:.0f} GB transformer would run on the CPU for days; use SPINBOT_TALK_BACKEND=lite on a "
                "CPU machine, or SPINBOT_TALK_ALLOW_CPU=true to run it anyway)"
            )

    # ---- files ----------------------------------------------------------------------------------------------------
    def resolve_voices(
        self, spec: PipelineSpec, params: dict[str, dict[str, Any]], request: JobRequest
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Path]]:
        """Each speech node's `narrator_voice` param as the stored key its task reads, and the local files (the
        CLI's) to copy into the job's inputs, by node. The param names:
        - an upload by its id (what POST /v1/uploads answers): the owner's voice upload of that id. Any other id
          (another key's upload, a portrait's, none) is the same one line, so no key learns of another's uploads;
        - with `request.local_files` (`spinbot run --set NODE.narrator_voice=FILE`), a local file: copied into the
          job's inputs by Runner.create_job, which sets the param to its key;
        - a stored key: one of the owner's uploads (with API keys), present in the store.
        Raises ParamsError; the file itself is checked by check_files, as the job's own voice is."""
        resolved = {node_id: dict(given) for node_id, given in params.items()}
        local: dict[str, Path] = {}
        for node in spec.nodes:
            value = resolved.get(node.id, {}).get("narrator_voice")
            if not value or not issubclass(load_task(node.task).params_model, TextToSpeechParams):
                continue
            if request.local_files and Path(value).is_file():
                local[node.id] = Path(value)
            elif UPLOAD_ID.fullmatch(value):
                key = upload_key(self.store, request.owner, value, "voice")
                if key is None:
                    raise ParamsError(f"{node.id}.narrator_voice: unknown voice upload {echo(value)}")
                resolved[node.id]["narrator_voice"] = key
            else:
                self._named_key(node.id, value, request)
        return resolved, local

    def check_files(
        self,
        spec: PipelineSpec,
        nodes: dict[str, TaskParams],
        request: JobRequest,
        local_voices: dict[str, Path] | None = None,
    ) -> None:
        """A local portrait decodes; the job's narrator voice and any other voice a speech node names are long
        enough and not silent (stored ones are fetched to be checked).

        Every decode runs in the sandbox (spinbot.media.sandbox: a child process with memory, CPU and time limits),
        like the upload check: a stored voice is bytes from an API client, and a local file (request.image,
        request.voice: the CLI's, never the API's) must not take the CLI's own process down either. The uploaded
        portrait is not decoded again here: its upload check did that (and the task that reads it checks it again,
        spinbot.tasks.user_files)."""
        if request.image is not None:
            what, limit = "the portrait", self.settings.max_image_pixels
            run_checked(self.settings, what, PORTRAIT_CHECK, str(request.image), limit)
        with tempfile.TemporaryDirectory(prefix="spinbot-admission-") as tmp:
            if request.voice is not None:
                check_voice(request.voice, self.settings, "the narrator voice")
            elif "narrator_voice" in request.input_keys:
                path = self._fetch(request.input_keys["narrator_voice"], Path(tmp) / "voice")
                check_voice(path, self.settings, "the narrator voice")
            for node_id, given in nodes.items():
                if local_voices and node_id in local_voices:
                    check_voice(local_voices[node_id], self.settings, f"{node_id}.narrator_voice")
                elif isinstance(given, TextToSpeechParams) and given.narrator_voice:
                    path = self._fetch(self._named_key(node_id, given.narrator_voice, request), Path(tmp) / node_id)
                    check_voice(path, self.settings, f"{node_id}.narrator_voice")

    def _named_key(self, node_id: str, key: str, request: JobRequest) -> str:
        """A stored file a param names: it exists, and with API keys it is one of the owner's uploads."""
        what, owner = f"{node_id}.narrator_voice", request.owner
        # the CLI's value that is neither a file nor a key: a path mistyped, most likely
        nothing_there = f"{what}: no file, voice upload or stored key is named {echo(key)}"
        try:
            check_key(key)
        except InputError as err:
            raise ParamsError(nothing_there if request.local_files else f"{what}: {err}") from None
        if owner is not None and not key.startswith(upload_folder(owner)):
            raise ParamsError(f"{what}: '{key}' is not one of your uploads")
        if not self.store.exists(key):
            raise ParamsError(nothing_there if request.local_files else f"{what}: '{key}' is not in the artifact store")
        return key

    def _fetch(self, key: str, dest: Path) -> Path:
        dest = dest.with_suffix(Path(key).suffix)
        self.store.download(key, dest)
        return dest


# The checks that decode, by name: run in a sandbox worker (spinbot.media.sandbox), which imports them.
VOICE_CHECK = "spinbot.media.upload_check:check_voice_sample"
PORTRAIT_CHECK = "spinbot.media.upload_check:check_portrait"


def check_voice(path: Path, settings: Settings, what: str) -> None:
    """A voice sample too long (its header, then a decode that stops at the limit: a long file is refused before it
    is read whole), too short or silent to clone; decoding errors are one line too. Decoded in a sandbox worker
    (spinbot.media.sandbox) unless SPINBOT_UPLOAD_CHECK_SANDBOX=false."""
    limits = (settings.max_voice_seconds, settings.min_voice_seconds, what)
    run_checked(settings, what, VOICE_CHECK, str(path), *limits)


def _refuse_long(text: str, limit: int, what: str, setting: str) -> None:
    problem = unstorable(text)
    if problem:
        raise InputError(f"{what} {problem}")
    if len(text) > limit:
        raise InputError(f"{what} has {len(text)} characters, over the limit of {limit} ({setting})")
