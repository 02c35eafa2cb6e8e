"""What every `autoscaler` command shares: usage errors and failures as ONE line on stderr,
exit status 2, never a usage box or a traceback. Not pure (prints, exits)."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand


def _first_line(e: Exception) -> str:
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    return message.splitlines()[0] if message else type(e).__name__


class OneLineErrors(TyperCommand):
    """Usage errors (bad option values, unknown options) as one line, no usage box."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except typer.TyperException as e:
            typer.echo(f"error: {_first_line(e)}", err=True)
            raise typer.Exit(2) from None


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def run_app(app: typer.Typer) -> NoReturn:
    """Run a Typer app as a program: its exit status, usage errors as one line (exit 2)."""
    try:
        rv = app(standalone_mode=False)  # click returns an Exit's code here
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except typer.TyperException as e:
        if type(e).__name__ != "NoArgsIsHelpError":  # else the help is printed: nothing to add
            typer.echo(f"error: {_first_line(e)}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
