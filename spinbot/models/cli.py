"""`spinbot models list | check | pull`: the native backends' model files in SPINBOT_MODELS_DIR."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from spinbot.errors import InputError, SpinBotError

app = typer.Typer(no_args_is_help=True, help="List, check and pull the native backends' model files.")

TASK_HELP = (
    "Task whose files to handle (repeatable): f5_to_tts, infinite_talk, upscale_video. Default: the tasks "
    "whose backend is native (SPINBOT_TTS_BACKEND, SPINBOT_TALK_BACKEND, SPINBOT_UPSCALE_BACKEND)."
)
SET_HELP = "NODE.PARAM=VALUE, repeatable: a file param other than the default (e.g. upscale_video.model_name_0=x.pth)."
DIR_HELP = "Models folder (default: SPINBOT_MODELS_DIR)."
# the three commands' options, declared once (typer reads them, never changes them)
TASK_OPTION = typer.Option([], "--task", help=TASK_HELP)
SET_OPTION = typer.Option([], "--set", help=SET_HELP)
DIR_OPTION = typer.Option(None, "--models-dir", help=DIR_HELP)
NONE_SELECTED = (
    "no task uses a native backend (SPINBOT_TTS_BACKEND, SPINBOT_TALK_BACKEND, SPINBOT_UPSCALE_BACKEND are all "
    "lite); name one with --task"
)
GPU_EXTRA = "the native backends' model files need the gpu extra (pip install -e '.[gpu]'): {err}"


@contextmanager
def _refusals() -> Iterator[None]:
    """A SpinBotError or a missing gpu extra inside: its one error line, and the command exits."""
    from spinbot.cli import fail

    try:
        yield
    except SpinBotError as err:
        fail(str(err))
    except ImportError as err:
        fail(GPU_EXTRA.format(err=err))


def _context(tasks: list[str], sets: list[str], models_dir: Path | None, none_ok: bool = False):
    """The selected tasks, the models folder and the --set overrides; no task selected is an error unless
    `none_ok` (list says so and succeeds: there is nothing to check or pull, but nothing to list is an answer)."""
    from spinbot.cli_sets import parse_sets
    from spinbot.models.selection import select_tasks
    from spinbot.settings import get_settings

    settings = get_settings()
    root = models_dir or settings.models_dir
    if root.exists() and not root.is_dir():
        raise InputError(f"SPINBOT_MODELS_DIR={root} is a file, not a folder")
    selected, overrides = select_tasks(settings, tasks), parse_sets(sets)
    if not selected and not none_ok:
        raise InputError(NONE_SELECTED)
    return selected, root, overrides


@app.command("list")
def list_files(
    task: list[str] = TASK_OPTION,
    set_: list[str] = SET_OPTION,
    models_dir: Path | None = DIR_OPTION,
) -> None:
    """Every file the selected backends need: where it is looked up, present or missing, its size, its source."""
    from spinbot.models.selection import required_files

    with _refusals():
        tasks, root, overrides = _context(task, set_, models_dir, none_ok=True)
        if not tasks:
            typer.echo(NONE_SELECTED)
            return
        needed = required_files(tasks, root, overrides)
    typer.echo(_folder_line(root, "--models-dir" if models_dir else "SPINBOT_MODELS_DIR"))
    for f in needed:
        status = "present" if f.present else ("missing" if f.required else "absent (optional)")
        size = f.size if f.present else (f.source.size if f.source else None)
        source = f.source.describe() if f.source else "no known source"
        note = f"  [{f.note}]" if f.note else ""
        why = f.why_missing() if f.required and not f.present else ""  # walks the models folder: once
        note += f"  [{why.removeprefix('; ')}]" if why else ""
        typer.echo(f"{status:<18} {_human(size):>9}  {f.relpath}  ({f.task}.{f.param})  <- {source}{note}")
    missing = [f for f in needed if f.required and not f.present]
    typer.echo(
        f"{len(needed)} files, {len(missing)} missing" + ("; `spinbot models pull` fetches them" if missing else "")
    )


def _folder_line(root: Path, named_by: str) -> str:
    """The models folder as the files' places below are relative to: absolute, since a relative SPINBOT_MODELS_DIR
    (its default, ./models) is the folder spinbot runs in, and "models" alone left the user guessing which."""
    given = f"={root}" if not root.is_absolute() else ""
    there = "" if root.is_dir() else "; no such folder yet: `spinbot models pull` makes it"
    return f"models folder: {root.resolve()} ({named_by}{given}{there})"


@app.command()
def check(
    task: list[str] = TASK_OPTION,
    set_: list[str] = SET_OPTION,
    models_dir: Path | None = DIR_OPTION,
) -> None:
    """Every file's keys and shapes against the architecture the backend builds, from the headers only."""
    from spinbot.cli import err_console
    from spinbot.models.selection import check_tasks, required_files

    start = time.monotonic()
    with _refusals():
        tasks, root, overrides = _context(task, set_, models_dir)
        problems = check_tasks(tasks, root, overrides)
        needed = required_files(tasks, root, overrides)
    for problem in problems:
        typer.echo(problem.line(root))
    seconds = time.monotonic() - start
    count = len([f for f in needed if f.present])
    if problems:
        missing = len([f for f in needed if f.required and not f.present])
        err_console.print(
            f"{len(problems)} problem(s) in the model files of {', '.join(tasks)} ({seconds:.1f} s)"
            + _where_and_what_next(root, missing),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    typer.echo(f"ok: {count} files of {', '.join(tasks)} fit their architectures ({seconds:.1f} s)")


def _where_and_what_next(root: Path, missing: int) -> str:
    """The problem lines name files inside the models folder: which folder (a relative SPINBOT_MODELS_DIR is the
    folder spinbot runs in), and how to get the files that are not there."""
    there = "" if root.is_dir() else ", no such folder yet"
    fetch = f"; {missing} file(s) missing: `spinbot models pull` fetches them" if missing else ""
    return f"; the files are looked up in {root.resolve()} (SPINBOT_MODELS_DIR or --models-dir{there}){fetch}"


@app.command()
def pull(
    task: list[str] = TASK_OPTION,
    set_: list[str] = SET_OPTION,
    models_dir: Path | None = DIR_OPTION,
) -> None:
    """Download every missing file from its source (HF_TOKEN, HF_ENDPOINT honoured), sha256-verified."""
    from spinbot.cli_style import print_error
    from spinbot.models.pull import PullError, Unreachable, pull_file, source_host
    from spinbot.models.selection import required_files

    with _refusals():
        tasks, root, overrides = _context(task, set_, models_dir)
        needed = required_files(tasks, root, overrides)
        wanted = [f for f in needed if not f.present and (f.required or f.source is not None)]
        if wanted:  # the downloaders (the gpu extra's): one line before any download, not a traceback midway
            import httpx  # noqa: F401
            import huggingface_hub  # noqa: F401
    failures = []
    unreachable: dict[str, Unreachable] = {}  # host -> the first refusal: its other files are not tried
    not_tried: list[str] = []
    for f in wanted:
        if f.source is not None and source_host(f.source) in unreachable:
            not_tried.append(f.relpath)
            continue
        try:
            done = pull_file(f)
        except Unreachable as err:
            unreachable.setdefault(err.host, err)
            not_tried.append(f.relpath)
            continue
        except PullError as err:
            failures.append(str(err))
            print_error(str(err))
            continue
        how = f"verified against the {done.verified_against}" if done.verified_against else "no published hash"
        commit = f", commit {done.commit}" if done.commit else ""
        typer.echo(f"pulled {f.relpath} (sha256 {done.sha256}, {how}{commit})")
    if unreachable:
        print_error(_unreachable_line(unreachable, not_tried, root))
    if failures or unreachable:
        raise typer.Exit(1)
    typer.echo(f"ok: every file of {', '.join(tasks)} is in {root.resolve()}")


def _unreachable_line(unreachable: dict, not_tried: list[str], root: Path) -> str:
    """One line for every file whose host took no connection (offline, say), instead of one error per file."""
    first = next(iter(unreachable.values()))
    count = f"{len(not_tried)} file{'s' if len(not_tried) != 1 else ''}"
    return (
        f"cannot reach {', '.join(unreachable)} ({first.reason}): {count} not downloaded ({not_tried[0]}"
        f"{', ...' if len(not_tried) > 1 else ''}); check the network, set HF_ENDPOINT to a Hub mirror, or copy the "
        f"files into {root.resolve()} by hand (`spinbot models list` shows each one's place)"
    )


def _human(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)
