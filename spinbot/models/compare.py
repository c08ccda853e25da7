"""A checkpoint's header against the layout a backend's architecture expects: one Problem per difference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spinbot.errors import first_line
from spinbot.models.headers import FLOAT_DTYPES, TensorSpec, UnreadableCheckpoint, read_header

Layout = Mapping[str, TensorSpec]  # key -> shape and dtype, in the model's names


@dataclass(frozen=True)
class Problem:
    path: Path  # the file (or folder) the problem is in
    message: str

    def line(self, models_dir: Path | None = None) -> str:
        shown = self.path
        if models_dir is not None:
            try:
                shown = self.path.relative_to(models_dir)
            except ValueError:
                pass
        return f"{shown}: {self.message}"


def compare_layout(
    path: Path,
    expected: Layout,
    found: Layout,
    *,
    file_name: Callable[[str], str] = lambda key: key,
    unexpected_ok: bool = False,
    dtypes: frozenset[str] = FLOAT_DTYPES,
    path_of: Callable[[str], Path] | None = None,
) -> list[Problem]:
    """Every missing key, unexpected key (unless the loader ignores extra keys), misshapen key, and key of a dtype
    the loader cannot use (a float parameter must be one of `dtypes`; an integer buffer any integer type).
    `expected` and `found` use the model's names; `file_name` maps a model key back to the name the file uses, so a
    problem names what the user would find in the file; `path_of` names the file a key belongs in, where several
    files merge into one model."""
    where = path_of or (lambda key: path)
    if found and expected and path_of is None and not set(expected) & set(found):
        return [_another_model(path, expected, found, file_name)]
    problems = [
        Problem(where(k), f"missing key '{file_name(k)}' (shape {list(spec.shape)})")
        for k, spec in sorted(expected.items())
        if k not in found
    ]
    if not unexpected_ok:
        problems += [Problem(where(k), f"unexpected key '{file_name(k)}'") for k in sorted(set(found) - set(expected))]
    for key in sorted(set(expected) & set(found)):
        spec, need = found[key], expected[key]
        if tuple(spec.shape) != tuple(need.shape):
            problems.append(
                Problem(
                    where(key),
                    f"key '{file_name(key)}' has shape {list(spec.shape)}, the model needs {list(need.shape)}",
                )
            )
        elif not _dtype_fits(spec.dtype, need.dtype, dtypes):
            allowed = ", ".join(sorted(dtypes)) if is_float(need.dtype) else "an integer type"
            problems.append(Problem(where(key), f"key '{file_name(key)}' is {spec.dtype}, the loader needs {allowed}"))
    return problems


MAX_KEY_LINES = 5  # a file with more problems of one kind than this gets one line for them


def _kind(message: str) -> str | None:
    """The kind of a per-key problem line (its key is the first quoted name), or None for any other line."""
    if message.startswith("missing key '"):
        return "missing keys"
    if message.startswith("unexpected key '"):
        return "unexpected keys"
    if (message.startswith("key '") and "' has shape " in message) or "the model's parameter is [" in message:
        return "keys of another shape than the model's"
    if message.startswith("'") and message.endswith("which the model does not have"):
        return "keys targeting weights the model does not have"
    return None


def condensed(problems: list[Problem]) -> list[Problem]:
    """The same problems, with a file's per-key problems of one kind (missing, unexpected, misshapen, a LoRA key
    with no target) past MAX_KEY_LINES in one line: a file of another model or size under the expected name lacks
    hundreds of keys, and one line per key buries the point."""
    groups: dict[tuple[Path, str], list[Problem]] = {}
    for problem in problems:
        kind = _kind(problem.message)
        if kind is not None:
            groups.setdefault((problem.path, kind), []).append(problem)
    many = {group: found for group, found in groups.items() if len(found) > MAX_KEY_LINES}
    out: list[Problem] = []
    for problem in problems:
        group = (problem.path, _kind(problem.message) or "")
        if group not in many:
            out.append(problem)
        elif many[group][0] is problem:  # the group's line, where its first key was
            found = many[group]
            names = [p.message.split("'")[1] for p in found[:3]]
            shown = ", ".join(f"'{name}'" for name in names)
            out.append(Problem(problem.path, f"{len(found)} {group[1]} ({shown} and {len(found) - len(names)} more)"))
    return out


def _another_model(path: Path, expected: Layout, found: Layout, file_name: Callable[[str], str]) -> Problem:
    """A file that shares no key with the model: another model's file under this name (or a download of the wrong
    file), said in one line instead of one per key."""
    needs = ", ".join(f"'{file_name(k)}'" for k in sorted(expected)[:2])
    try:  # the names as the file has them (a loader may have renamed them on the way to `found`)
        names = sorted(read_header(path)) if path.suffix == ".safetensors" else []
    except UnreadableCheckpoint:
        names = []
    holds = ", ".join(f"'{k}'" for k in (names or sorted(file_name(k) for k in found))[:2])
    return Problem(
        path,
        f"holds none of the {len(expected)} keys the model needs ({needs}, ...); its {len(found)} keys ({holds}, "
        "...) are another model's: the wrong file under this name?",
    )


def is_float(dtype: str) -> bool:
    return dtype.startswith(("F", "BF"))


def _dtype_fits(found: str, needed: str, floats: frozenset[str]) -> bool:
    return found in floats if is_float(needed) else not is_float(found)


def module_layout(module) -> dict[str, TensorSpec]:
    """A module's state dict (built on the meta device: no memory) as key -> TensorSpec."""
    from spinbot.models.headers import torch_dtype_name

    return {k: TensorSpec(tuple(v.shape), torch_dtype_name(v.dtype)) for k, v in module.state_dict().items()}


def problems_from_error(path: Path, err: BaseException) -> list[Problem]:
    """torch's load_state_dict error (all missing, unexpected and misshapen keys in one message) as one Problem
    per key; any other error as one Problem with its first line."""
    text = str(err)
    problems = []
    for line in text.splitlines():
        line = line.strip().rstrip(".")
        for prefix, what in (
            ("Missing key(s) in state_dict: ", "missing key"),
            ("Unexpected key(s) in state_dict: ", "unexpected key"),
        ):
            if line.startswith(prefix):
                problems += [Problem(path, f"{what} '{key}'") for key in _quoted(line[len(prefix) :])]
        if line.startswith("size mismatch for "):
            problems.append(Problem(path, line))
    return problems or [Problem(path, first_line(err))]


def _quoted(names: str) -> Iterable[str]:
    return [part.strip().strip('"') for part in names.split(",") if part.strip()]


def unreadable_safetensors(paths: Iterable[Path]) -> list[Problem]:
    """Present safetensors files whose layout is not checked yet (the rest of what their loader reads is missing):
    each header at least reads, so a corrupt or cut download is reported now (a header read is cheap)."""
    problems = []
    for path in paths:
        if path.suffix == ".safetensors":
            try:
                read_header(path)
            except UnreadableCheckpoint as err:
                problems.append(Problem(path, str(err)))
    return problems


def guarded(path: Path, run: Callable[[], list[Problem]]) -> list[Problem]:
    """run()'s problems, or the one problem that a file it reads is not a readable checkpoint (blamed on `path`)."""
    try:
        return run()
    except UnreadableCheckpoint as err:
        return [Problem(path, str(err))]
