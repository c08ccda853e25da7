"""One settings object; every field reads SPINBOT_<NAME> from the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPINBOT_", extra="ignore")

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

    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    ollama_timeout: float = 30.0

    models_dir: Path = Path("./models")
    tts_backend: Literal["lite", "native", "comfyui"] = "lite"
    talk_backend: Literal["lite", "native", "comfyui"] = "lite"
    upscale_backend: Literal["lite", "native", "comfyui"] = "lite"

    # Native backends on CUDA: torch.compile the transformer blocks; e4m3 (FP8) matmuls in them (spinbot.backends.fp8;
    # InfiniteTalk measured 1.14x a step at 4.9% output error; F5-TTS is slower with them, its matmuls are narrow).
    talk_compile: bool = True
    talk_fp8: bool = False
    tts_compile: bool = True
    tts_fp8: bool = False
    # F5-TTS's packed attention on CUDA: FlashAttention 2 (built into torch), FlashAttention 4 (the flash-attn-4
    # package, the `fa4` extra; Hopper and Blackwell), or auto: 4 where it is installed and the GPU takes it.
    tts_attention: Literal["auto", "flash2", "flash4"] = "auto"

    # Lite talking-head output: the portrait is shrunk (never enlarged) to fit this many pixels.
    talk_max_pixels: int = Field(default=832 * 480, ge=64 * 64)

    # Live output: infinite_talk and upscale_video also write their video as HLS segments while they run
    # (jobs/<job>/<node>/live/, served by GET /v1/jobs/{id}/live/{node}/index.m3u8), one per window or batch.
    live_output: bool = True

    log_level: str = "INFO"

    # Redis queue and workers (docs/queue-choice.md). Routes add to or override the default task -> queue table.
    queue_routes: dict[str, str] = Field(default_factory=dict)
    queue_default: str = "cpu"
    queue_lock_seconds: float = Field(default=30.0, gt=0)  # a dead worker's job is redelivered after about this
    queue_stalled_check_seconds: float = Field(default=15.0, gt=0)
    queue_max_stalled: int = Field(default=2, ge=0)  # redeliveries after dead workers before the node fails
    queue_redis_retry_seconds: float = Field(default=60.0, gt=0)  # Redis unreachable this long: the node fails
    queue_result_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    worker_queues: str = "gpu,cpu"
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_watchdog_seconds: float = Field(default=10.0, gt=0)  # restart a queue worker idle while jobs wait
    extra_tasks: str = ""  # comma-separated modules, each with a TASK, that workers may also run (tests, plugins)
    model_cache_bytes: int = Field(default=24 * 1024**3, ge=0)

    # HTTP API
    api_keys: str | None = None  # comma-separated; unset: the API only serves loopback addresses
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    api_job_threads: int = Field(default=2, ge=1)

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'spinbot.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve()}"

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "checkpoints.sqlite"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
