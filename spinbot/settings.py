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

    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    ollama_timeout: float = 30.0

    models_dir: Path = Path("./models")
    tts_backend: Literal["lite", "native", "comfyui"] = "lite"
    talk_backend: Literal["lite", "native", "comfyui"] = "lite"
    upscale_backend: Literal["lite", "native", "comfyui"] = "lite"

    # Lite talking-head output: the portrait is shrunk (never enlarged) to fit this many pixels.
    talk_max_pixels: int = Field(default=832 * 480, ge=64 * 64)

    log_level: str = "INFO"

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
