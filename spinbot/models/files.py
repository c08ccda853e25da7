"""One model file a backend needs: where it is looked up, whether it is there, where it comes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spinbot.models.manifest import Source, source_for


@dataclass(frozen=True)
class ModelFile:
    task: str
    param: str  # the task param that names it (or the file's role where no param does)
    models_dir: Path
    relpath: str  # POSIX path under SPINBOT_MODELS_DIR
    required: bool = True
    note: str = ""  # e.g. "optional: the package's own config is used without it"

    @property
    def path(self) -> Path:
        return self.models_dir / self.relpath

    @property
    def present(self) -> bool:
        return self.path.is_file()

    @property
    def size(self) -> int | None:
        return self.path.stat().st_size if self.present else None

    @property
    def source(self) -> Source | None:
        return source_for(self.relpath)


def model_file(
    task: str, param: str, models_dir: Path, *parts: str, required: bool = True, note: str = ""
) -> ModelFile:
    relpath = "/".join(p.strip("/") for p in parts if p)
    return ModelFile(task, param, models_dir, relpath, required, note)
