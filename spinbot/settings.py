"""One settings object; every field reads SPINBOT_<NAME> from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from spinbot.errors import SettingsError

# The longest a time setting may be (a day; retention: a century): each is slept on, added to a clock or
# multiplied into a timeout, where inf or 1e300 was an OverflowError traceback once a job was already stored.
MAX_SETTING_SECONDS = 24 * 3600
MAX_RETENTION_DAYS = 36_500


class Settings(BaseSettings):
    # NaN and infinities are refused as any other value out of bounds (one line naming the variable)
    model_config = SettingsConfigDict(env_prefix="SPINBOT_", extra="ignore", allow_inf_nan=False)

    # Where the embedded defaults keep their files (SQLite, checkpoints, artifacts).
    data_dir: Path = Path("./spinbot-data")
    database_url: str | None = None  # default: sqlite file in data_dir
    storage_url: str | None = None  # default: file://<data_dir>
    redis_url: str | None = None  # unset: in-process dispatch
    pipelines: Path | None = None  # unset: the pipelines.json shipped with the package

    # S3 artifact store (storage_url s3://BUCKET[/prefix]); credentials come from boto3's usual AWS chain.
    s3_endpoint_url: str | None = None  # MinIO or another S3-compatible server; path-style addressing when set
    s3_region: str | None = None  # unset: AWS_REGION / AWS_DEFAULT_REGION / profile, else us-east-1
    # S3 refuses multipart parts under 5 MiB (all but the last), so neither may go lower.
    s3_multipart_threshold: int = Field(default=64 * 1024 * 1024, ge=5 * 1024 * 1024)
    s3_multipart_chunksize: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    s3_presign_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)  # SigV4 caps presigned URLs at 7 days
    # The S3 endpoint as clients reach it (e.g. https://media.example.com). Set: artifact downloads redirect to URLs
    # presigned for it. Unset: the API streams artifacts itself, so no client ever sees the internal endpoint.
    s3_public_url: str | None = None
    # Transient S3 errors (refused or dropped connections, 5xx, throttling) are retried by botocore with jittered
    # exponential backoff (50 ms doubling up to 20 s a wait); 12 attempts ride out about half a minute of outage.
    s3_retry_mode: Literal["standard", "adaptive"] = "standard"
    s3_max_attempts: int = Field(default=12, ge=1, le=50)

    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    ollama_timeout: float = Field(default=30.0, gt=0, le=3600)

    models_dir: Path = Path("./models")
    tts_backend: Literal["lite", "native"] = "lite"
    talk_backend: Literal["lite", "native"] = "lite"
    # Native InfiniteTalk with full-size transformer files where torch sees no CUDA GPU would run the 14B model on the
    # CPU for days: refused at submission unless this is set (spinbot.control.admission).
    talk_allow_cpu: bool = False
    upscale_backend: Literal["lite", "native"] = "lite"
    # The lite speech backend's language for Latin-script text: "auto" (detected, English unless sure) or an espeak-ng
    # language (de, fr, pt-br, en-us, ...). Other writing systems keep the language they name.
    tts_language: str = "auto"

    # Native backends on CUDA: torch.compile the transformer blocks; e4m3 (FP8) matmuls in them (spinbot.backends.fp8;
    # InfiniteTalk, with cuDNN FP8 attention on an H200: 1.95 s a step against 2.55 s, at 5.5-6.1% forward error, the
    # README's table; F5-TTS is slower with them, its matmuls are narrow).
    talk_compile: bool = True  # InfiniteTalk: also the VAE's norms, with its convolutions channels-last
    talk_compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    talk_fp8: bool = False
    # InfiniteTalk's self-attention kernel (spinbot.backends.attention): PyTorch SDPA in bfloat16, or 8-bit attention
    # (int8: INT8 Q K^T + FP8 P V, fp8: FP8 Q K^T + FP8 P V) through our Triton kernel; 8-bit needs sm89+ on CUDA;
    # cudnn-fp8: cuDNN's FP8 flash attention (Hopper+, the gpu extra's cudnn-frontend), the fastest, least exact.
    # auto: cudnn-fp8 where it runs, else int8 where the GPU has FP8 tensor cores, else sdpa (the README's error
    # table says why).
    talk_attention: Literal["auto", "sdpa", "int8", "fp8", "cudnn-fp8"] = "auto"
    # InfiniteTalk's Wan VAE on CUDA: float32 as the official pipeline, or bfloat16 (its decode and motion-frame
    # encode about 2x faster; 50 dB PSNR against float32, not growing over windows: benchmarks/vae_precision.py).
    talk_vae_dtype: Literal["float32", "bfloat16"] = "float32"
    tts_compile: bool = True
    tts_fp8: bool = False
    # F5-TTS's packed attention on CUDA: FlashAttention 2 (built into torch), FlashAttention 4 (the flash-attn-4
    # package, the `fa4` extra; Hopper and Blackwell), or auto: 4 where it is installed and the GPU takes it.
    tts_attention: Literal["auto", "flash2", "flash4"] = "auto"

    # Lite talking-head output: the portrait is shrunk (never enlarged) to fit this many pixels.
    talk_max_pixels: int = Field(default=832 * 480, ge=64 * 64)

    # Live output: infinite_talk and upscale_video also write their video as HLS segments while they run
    # (jobs/<job>/<node>/live/, served by GET /v1/jobs/{id}/live/{node}/index.m3u8), one per window or batch.
    # Read where jobs are run from (the API, `spinbot run`), which asks the tasks for it; `spinbot run` asks only
    # with --watch, since nothing else plays it there.
    live_output: bool = True

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"  # any case: info, Warning

    # Redis queue and workers (docs/queue-choice.md). Routes add to or override the default task -> queue table.
    queue_routes: dict[str, str] = Field(default_factory=dict)
    queue_default: str = "cpu"
    # a dead worker's job is redelivered after about queue_lock_seconds
    queue_lock_seconds: float = Field(default=30.0, gt=0, le=MAX_SETTING_SECONDS)
    queue_stalled_check_seconds: float = Field(default=15.0, gt=0, le=MAX_SETTING_SECONDS)
    queue_max_stalled: int = Field(default=2, ge=0)  # redeliveries after dead workers before the node fails
    # Redis unreachable this long: the node fails
    queue_redis_retry_seconds: float = Field(default=60.0, gt=0, le=MAX_SETTING_SECONDS)
    queue_result_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    worker_queues: str = "gpu,cpu"
    # The native InfiniteTalk transformer on several GPUs, one process each, the token sequence split between them
    # (`spinbot worker --gpus`; docs/sequence_parallel.md): CUDA indices, comma-separated ("0,1,2,3"); empty: one
    # device. worker_cpu_ranks runs that many gloo ranks on the CPU instead (tests).
    worker_gpus: str = ""
    worker_cpu_ranks: int = Field(default=0, ge=0)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0, le=MAX_SETTING_SECONDS)
    # restart a queue worker idle while jobs wait
    worker_watchdog_seconds: float = Field(default=10.0, gt=0, le=MAX_SETTING_SECONDS)
    extra_tasks: str = ""  # comma-separated modules, each with a TASK, that workers may also run (tests, plugins)
    # Models kept loaded between jobs (host and GPU memory together). The native set of the seed's defaults takes
    # about 52 GB (docs/models.md): below that the 14B transformer is reloaded for every job.
    model_cache_bytes: int = Field(default=64 * 1024**3, ge=0)
    # Cap this process's share of each CUDA device's memory (native backends; unset: no cap). 0.56 of an H200 is an
    # 80 GB card.
    gpu_memory_fraction: float | None = Field(default=None, gt=0, le=1)

    # What a job may ask for, checked when it is submitted (spinbot.control.admission).
    max_prompt_chars: int = Field(default=4000, ge=1)
    max_script_chars: int = Field(default=10_000, ge=1)  # script.text, a script written by the user
    max_ref_text_chars: int = Field(default=1000, ge=1)  # the transcript of the narrator voice
    max_speech_seconds: float = Field(default=300.0, gt=0)  # the speech a job may produce (sets the video's length)
    min_voice_seconds: float = Field(default=1.0, ge=0)  # the narrator voice sample, and it must hold sound
    # The video a job makes (spinbot.tasks.video_budget): its frame, and its frames x width x height (the work). The
    # largest native 720p frame at x2 is 1024x3840 (3.9 MP); 16 MP takes every native one at x4 (720p: 2048x7680)
    # and none at x8. 300 s at 25 fps of that 720p x2 frame are 29.5 G pixels (the seed's 480p x2: 12.5 G at most).
    # The frame's ceiling is the largest frame libx264 opens through FFmpeg (16384x16128; tasks/video_budget.py).
    max_video_frame_pixels: int = Field(default=4096 * 4096, ge=64 * 64, le=16384 * 16128)
    max_video_pixels: int = Field(default=30_000_000_000, ge=64 * 64)
    # The talking head's denoising (spinbot.tasks.talk.check_talk_work): windows x frame_window_size x sampling_steps x
    # model passes a step (1 to 3, by the guidance scales). The seed's recipe for 300 s at 25 fps is 65,124; the
    # official 40 steps with both guidance passes 1.3 M (hours of an H100); 200 steps with both over the same
    # speech 6.5 M, a day and a half.
    max_talk_frame_steps: int = Field(default=2_000_000, ge=1)

    # One owner per job: the process driving a job renews its lease every third of this; another process takes the
    # job over only after the lease expired (spinbot.control.lease).
    job_lease_seconds: float = Field(default=30.0, ge=1, le=MAX_SETTING_SECONDS)
    # Finished jobs (and their artifacts and uploads) older than this are deleted by `spinbot gc` and by the API's
    # hourly sweep; unset: kept until deleted.
    job_retention_days: float | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS)

    # HTTP API
    api_keys: str | None = None  # comma-separated; unset: the API only serves loopback addresses
    # The API keys (comma-separated, each one of SPINBOT_API_KEYS) whose jobs may set `priority`: any other key's
    # job with one is a 403, so one user cannot put their jobs ahead of everyone's. Without API keys (loopback only,
    # one local user) priority is allowed.
    priority_api_keys: str | None = None
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # What one key's uploads may hold in all (the uploads its jobs use count too; deleting a job frees its uploads)
    max_upload_storage_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    # The uploads one API key may keep: each upload's quota check lists them all (a key of 100,000 tiny uploads made
    # each next upload take 10 s). 413 past it.
    max_upload_files: int = Field(default=5000, ge=1)
    # Any other request's body (a job is a few KB; a script of SPINBOT_MAX_SCRIPT_CHARS, JSON-escaped, fits many times)
    max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    # Seconds a client may take to send a request's head (from the connection's opening for its first), and a
    # request's whole body (an upload's: the longest pause in it); past it the connection is closed (head) or
    # answered 408 (body).
    api_request_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Seconds one write of an answer (a download, a live segment, an event) may wait for its client to take it; past
    # it the answer ends and the connection is closed (a client that stopped reading held it for ever).
    api_send_timeout: float = Field(default=60.0, gt=0, le=3600)
    max_active_jobs: int = Field(default=20, ge=1)  # jobs one API key may have waiting or running; past it: 429
    api_max_connections: int = Field(default=1000, ge=8)  # open connections (event streams count); past it: 503
    max_streams_per_key: int = Field(default=20, ge=1)  # event streams one API key may have open (per process): 429
    # Uploads one API key may be sending to one API process at once: each is written to a temporary file of up to
    # SPINBOT_MAX_UPLOAD_BYTES before the quota can count it, so one key could fill the disk. Past it: 429.
    max_uploads_per_key: int = Field(default=4, ge=1)
    # Inputs are judged by their headers before any decode: a small file can claim a huge image or hours of audio.
    # Pillow refuses headers past 2 x its own MAX_IMAGE_PIXELS (178,956,970) by itself, so the limit stays under it.
    max_image_pixels: int = Field(default=40_000_000, ge=64 * 64, le=178_956_970)  # 40 MP: 8000 x 5000
    max_voice_seconds: float = Field(default=60.0, gt=0, le=3600)  # the narrator voice sample
    # Uploads, the inputs at submission and a job's inputs before its task reads them are decoded first in child
    # processes (spinbot.media.sandbox), so a decoder blow-up costs a child, not the API, CLI or worker: each child's
    # address space past what its interpreter holds at start (the decoders' imports included: about 0.6 GiB; a 40 MP
    # portrait's decode peaks near 1 GiB), one check's wall-clock and CPU seconds, and how many children run at once.
    # false: decoded in the process's own threads (platforms without `resource`; tests that need it).
    upload_check_sandbox: bool = True
    upload_check_memory_bytes: int = Field(default=2 * 1024**3, ge=1024**3)
    upload_check_seconds: float = Field(default=60.0, gt=0, le=3600)
    upload_check_workers: int = Field(default=2, ge=1, le=64)
    # The page's media and event streams authenticate with a short-lived cookie signed with the key, never the key.
    media_cookie_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Who may read /metrics besides the API keys (a Prometheus scraper's bearer token); unset: the API keys only.
    metrics_key: str | None = None
    api_job_threads: int = Field(default=2, ge=1)

    # Webhooks (spinbot.control.callbacks): a job's callback_url is POSTed to, signed, when the job ends. Only public
    # addresses are called (no loopback, private, link-local such as cloud metadata, multicast or reserved ones), the
    # address checked is the one connected to, redirects are not followed (spinbot.control.callback_url).
    callback_allow_private: bool = False  # also loopback and private networks (an on-prem receiver); not link-local
    # Comma-separated host names, IP addresses and networks (hooks.internal, 10.1.2.3, 10.0.0.0/8) called even where
    # they are not public (link-local too, where named); for self-hosters' internal services.
    callback_allow_hosts: str = ""
    callback_max_url_chars: int = Field(default=2048, ge=64, le=8192)
    callback_connect_timeout: float = Field(default=5.0, gt=0, le=60)  # the name's lookup, then the connection
    callback_timeout: float = Field(default=15.0, gt=0, le=120)  # a whole attempt, lookup to the answer's status
    callback_max_attempts: int = Field(default=5, ge=1, le=20)  # network errors, 5xx and 429 are tried again
    callback_retry_seconds: float = Field(default=10.0, gt=0, le=3600)  # the first wait; each next one 3x as long

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("tts_language")
    @classmethod
    def _tts_language(cls, value: str) -> str:
        value = value.strip().lower()
        if value == "auto":
            return value
        from spinbot.backends.tts.languages import espeak_languages

        if value not in espeak_languages():
            raise ValueError("'auto' or a language the lite voice (espeak-ng) has, such as de, fr, pt-br, en-us")
        return value

    @field_validator("priority_api_keys")
    @classmethod
    def _priority_keys(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a key that is no API key (a typo, a key since removed) would allow nobody, silently
        api_keys = set(_key_list(info.data.get("api_keys")))
        strays = [key for key in _key_list(value) if key not in api_keys]
        if strays:
            keys = f"{len(strays)} key{'s' if len(strays) > 1 else ''}"
            raise ValueError(f"it names {keys} that SPINBOT_API_KEYS does not have; list only API keys")
        return value

    @field_validator("callback_allow_hosts")
    @classmethod
    def _allow_hosts(cls, value: str) -> str:
        from spinbot.control.callback_url import parse_allow_list

        parse_allow_list(value)  # a ValueError naming the entry
        return value

    @property
    def api_key_list(self) -> list[str]:
        return _key_list(self.api_keys)

    @property
    def priority_api_key_list(self) -> list[str]:
        return _key_list(self.priority_api_keys)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'spinbot.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve()}"

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "checkpoints.sqlite"


def _key_list(value: str | None) -> list[str]:
    return [k.strip() for k in (value or "").split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a refused value raises SettingsError with one line naming the variable."""
    try:
        return Settings()
    except ValidationError as err:
        raise SettingsError(one_line(err)) from None
    except SourceError as err:  # a value pydantic-settings cannot even parse: a dict setting that is not JSON
        raise SettingsError(unparsed(err)) from None


# Settings whose value is never echoed in an error line (it ends up in a terminal's scrollback or a service's log).
SECRET_SETTINGS = frozenset({"SPINBOT_API_KEYS", "SPINBOT_PRIORITY_API_KEYS", "SPINBOT_METRICS_KEY"})


def one_line(err: ValidationError) -> str:
    first, more = err.errors()[0], len(err.errors()) - 1
    first["msg"] = first["msg"].removeprefix("Value error, ")  # a validator's own sentence, as the user reads it
    field, *inside = first["loc"]  # inside: the key within a dict setting (SPINBOT_QUEUE_ROUTES)
    name = f"SPINBOT_{str(field).upper()}"
    tail = f" (and {more} more)" if more else ""
    if inside:
        where = ".".join(str(part) for part in inside)
        return f"{name}={os.environ.get(name)!r} refused: {where}: {first['msg']} (got {first.get('input')!r}){tail}"
    shown = "'***'" if name in SECRET_SETTINGS else repr(os.environ.get(name, first.get("input")))  # as typed
    return f"{name}={shown} refused: {first['msg']}{tail}"


def unparsed(err: SourceError) -> str:
    field = re.search(r'field "(\w+)"', str(err))
    if field is None:
        return f"a SPINBOT_ setting refused: {err}"
    name = f"SPINBOT_{field[1].upper()}"
    return f'{name}={os.environ.get(name)!r} refused: not JSON, e.g. {name}=\'{{"upscale_video": "cpu"}}\''


def misspelled(environ: Mapping[str, str]) -> list[str]:
    """A warning for each SPINBOT_ variable that is no setting but close to one (SPINBOT_TALK_BACKEDN): pydantic-
    settings ignores unknown names, so such a typo would silently leave the default in force."""
    import difflib

    known = {f"SPINBOT_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("SPINBOT_") or name in known or name.startswith("SPINBOT_TEST_"):  # the tests' own
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            warnings.append(f"{name} is not a setting (ignored); did you mean {close[0]}?")
    return warnings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
