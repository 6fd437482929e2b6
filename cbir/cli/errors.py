"""The CLI's error rule: bad input is one line on stderr naming the file or option and
the problem, and a non-zero exit code (2 for a CbirError, an OS/LMDB error, an invalid
value or a usage error). Nothing here imports more than typer, pydantic and lmdb, so an
error costs no model imports."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click; its exceptions derive from TyperException
    from typer import TyperException as UsageProblem
except ImportError:  # pragma: no cover - typer on top of click
    from click import ClickException as UsageProblem  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Turn a CbirError, an OS/LMDB error or a pydantic ValidationError into one line on
    stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import lmdb
        from pydantic import ValidationError

        from cbir.cli.render import setup_logging
        from cbir.errors import CbirError, validation_line

        setup_logging()
        try:
            return func(*args, **kwargs)
        except CbirError as exc:
            fail(str(exc))
        except (OSError, lmdb.Error) as exc:  # disk full, permissions, a path that is a file
            fail(str(exc))
        except ValidationError as exc:  # a value a command passed on unchecked
            fail(f"invalid {exc.title}: {validation_line(exc)}")

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `cbir: error: message` (one line) on stderr and exit with `code`."""
    typer.echo(f"cbir: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """A message's lines joined with '; ' (blank ones dropped)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def usage_line(exc: Exception) -> str:
    """A typer/click usage error as one line: `cbir search: error: Missing argument
    'index' (cbir search --help)`."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "cbir"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    hint = f" ({where} --help)" if ctx is not None else ""
    return f"{where}: error: {one_line(message)}{hint}"


class OneLineErrors(TyperGroup):
    """The root command group. Usage errors (a missing argument, a value typer refuses, an
    unknown command or option) are one line on stderr with exit code 2, not a usage box;
    everything else is typer's behaviour. Handled in `main`, so both the `cbir` script and
    typer's CliRunner see it."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageProblem as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `cbir` alone: its help, on stdout
                message = exc.format_message()
                if message.strip():
                    typer.echo(message)
            else:
                typer.echo(usage_line(exc), err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            typer.echo("cbir: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)
