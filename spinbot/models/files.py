"""One model file a backend needs: where it is looked up, whether it is there, where it comes from."""

from __future__ import annotations

import os
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

    def why_missing(self) -> str:
        """What is at or near the path of a missing file, as '; ...' to follow 'missing', else '': a broken
        symlink, a folder, a file of this name elsewhere in the models folder (a ComfyUI folder without its
        `wanvideo/` level), or the files beside where it was looked for (the 480p model where the 720p one is
        named), with the --set that takes one."""
        path = self.path
        if path.is_symlink() and not path.exists():
            return f"; it is a broken symlink (to {os.readlink(path)})"
        if path.is_dir():
            return "; it is a folder, not a file"
        elsewhere = _same_name(self.models_dir, path.name, skip=path)
        if elsewhere:
            return f"; a file of this name is at {elsewhere}: move it here"
        if path.parent.is_dir() and path.suffix:
            beside = sorted(p.name for p in path.parent.iterdir() if p.suffix == path.suffix and p.is_file())
            if beside:
                shown = ", ".join(beside[:3]) + (f" and {len(beside) - 3} more" if len(beside) > 3 else "")
                return f"; {Path(self.relpath).parent.as_posix()}/ holds {shown}{self._set_hint(beside[0])}"
        return ""

    def _set_hint(self, name: str) -> str:
        """`--set task.param=VALUE` that names `name` (beside this file) instead, where the param names a file
        under its folder (its value is the path below that folder's first part)."""
        from spinbot.tasks.model_files import MODEL_SLOTS

        slot = MODEL_SLOTS.get(self.task, {}).get(self.param)
        if slot is None or slot.holds != "file":
            return ""
        value = (Path(self.relpath).parent / name).relative_to(slot.folder).as_posix()
        return f" (to use it: --set {self.task}.{self.param}={value})"


MAX_WALKED = 5000  # entries of a models folder walked looking for a misplaced file


def _same_name(models_dir: Path, name: str, skip: Path) -> str | None:
    """The first file named `name` anywhere under the models folder (a bounded walk), as a path below it."""
    seen = 0
    for folder, dirs, files in os.walk(models_dir):
        dirs.sort()
        seen += len(dirs) + len(files)
        if name in files and Path(folder, name) != skip and Path(folder, name).is_file():
            return Path(folder, name).relative_to(models_dir).as_posix()
        if seen > MAX_WALKED:
            return None
    return None


def model_file(
    task: str, param: str, models_dir: Path, *parts: str, required: bool = True, note: str = ""
) -> ModelFile:
    relpath = "/".join(p.strip("/") for p in parts if p)
    return ModelFile(task, param, models_dir, relpath, required, note)
