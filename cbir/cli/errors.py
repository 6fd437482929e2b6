"""The CLI's error rule: a CbirError (or an OS/LMDB error) is one line on stderr, exit 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Turn a CbirError into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import lmdb

        from cbir.cli.render import setup_logging
        from cbir.errors import CbirError

        setup_logging()
        try:
            return func(*args, **kwargs)
        except CbirError as exc:
            typer.echo(f"cbir: error: {exc}", err=True)
            raise typer.Exit(2) from None
        except (OSError, lmdb.Error) as exc:  # disk full, permissions, a path that is a file
            typer.echo(f"cbir: error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
