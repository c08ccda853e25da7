"""How the CLI speaks: one error style (one line on stderr, "error: ...", a non-zero exit) for its own errors and
for click's usage errors, and help in plain words (TEXT, PATH, INTEGER; no type for flags)."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer 0.29 vendors click as typer._click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from spinbot.errors import SettingsError

if TYPE_CHECKING:  # the mixin below only ever joins click's Command
    from typer._click.core import Command as _ClickCommand
else:
    _ClickCommand = object

err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """The CLI's one error style: one line on stderr, "error: ...", and a non-zero exit."""
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    """ "error: MESSAGE" on stderr, the message printed as it is: a path or value with brackets in it ("[1]", "[/]")
    is no markup to rich (it would vanish, or fail the print with a traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(inert(message))}", highlight=False, soft_wrap=True, markup=True)


# Control characters (C0, DEL, C1) and the invisible marks that reorder or hide text (bidi embeddings, overrides,
# isolates; line and paragraph separators)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def inert(text: str) -> str:
    r"""Text for a terminal line, each unprintable character written as its escape (\n, \x1b, \u202e): an error
    quotes a name, a path or a job's error as given (`--set $'x\ny'`, a file name, a job an API client made), and
    a newline in it broke the one-line error, an escape sequence redrew or cleared the user's terminal."""
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


# typer 0.29 shows Python types in help (<str>, <list[str]>, <path>): the plain names a user types instead.
PLAIN_TYPES = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER", "bool": ""}


def plain_type(label: str | None) -> str:
    """ "<list[str]>" -> "TEXT", "<int range>" -> "INTEGER", "<bool>" (a flag) -> ""."""
    inner = (label or "").strip("<>").removeprefix("list[").removesuffix("]").removesuffix(" range")
    return PLAIN_TYPES.get(inner, inner.upper())


def unwrapped(help_text: str | None) -> str | None:
    """A docstring's paragraphs each on one line, for rich to wrap at the terminal's width: typer's rich help keeps
    a paragraph's single line breaks (click's plain help does not), so the source's wrapping at 120 columns broke
    `spinbot run --help` mid-line at 80 ("exit status 128 + the" / "signal: ..."). A paragraph that starts with
    click's \\b marker keeps its lines."""
    if not help_text:
        return help_text
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(part if part.startswith("\b") else " ".join(part.split()) for part in paragraphs)


class FlagsWithoutType(_ClickCommand):
    """Help in plain words: no type for flags (-h/--help included), an argument's metavar (NAME, FILE), and plain
    type names (TEXT, PATH, INTEGER) for every other param; its paragraphs wrapped at the terminal's width."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = unwrapped(self.help)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        # Typer has no hook for the help's type column: each param's own method is replaced.
        for param in self.params:
            if not isinstance(param, (TyperArgument, TyperOption)):
                continue
            if param.param_type_name == "argument" and param.metavar:
                param.display_type_rich = lambda ctx: ""  # type: ignore[method-assign]
            # (typer builds without rich help have no display_type_rich)
            elif param.metavar is None and hasattr(param, "display_type_rich"):
                param.display_type_rich = _plain(param.display_type_rich)  # type: ignore[method-assign,assignment]
        return option


def _plain(typed: Callable[[Any], str | None]) -> Callable[[Any], str]:
    """A param's type column in plain words: TEXT, PATH, INTEGER."""
    return lambda ctx: plain_type(typed(ctx))


class Command(FlagsWithoutType, TyperCommand):
    pass


class OneErrorStyle(FlagsWithoutType, TyperGroup):
    """Usage errors (an unknown option, a missing value, a bad number) in the same one-line style as every other
    error, instead of click's boxed message."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        warn_misspelled_settings()
        try:
            result = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help())
            result = 0
        except typer.TyperException as err:  # click's exceptions (typer vendors click): usage and bad values
            ctx = getattr(err, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if isinstance(err, UsageError) and ctx else ""
            message = _first_lower(err.format_message()).rstrip(".")
            print_error(f"{message}{hint}")
            result = err.exit_code
        except SettingsError as err:  # a SPINBOT_ variable refused where a command first reads the settings
            print_error(str(err))
            result = 2
        except typer.Abort:
            err_console.print("[bold red]error:[/] aborted", highlight=False)
            result = 1
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def warn_misspelled_settings() -> None:
    """One "warning: ..." line on stderr for each SPINBOT_ variable that looks like a misspelled setting."""
    import os

    from spinbot.settings import misspelled

    for line in misspelled(os.environ):
        err_console.print(f"[yellow]warning:[/] {escape(inert(line))}", highlight=False, soft_wrap=True, markup=True)


def _first_lower(message: str) -> str:
    return message[:1].lower() + message[1:]


HELP = {"help_option_names": ["-h", "--help"]}
