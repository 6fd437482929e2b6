"""Atomic export directories: everything is written into a hidden sibling directory and
published by renaming it to its place, so a failed export leaves no half-written DIR."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cbir.errors import CbirError

#: Written last into every export; its presence marks a directory as a cbir export.
MARKER = "export.json"
MARKER_KEY = "cbir_export"


class ExportError(CbirError):
    """An export directory cannot be written (not empty and not a previous export)."""


def is_export(path: Path) -> bool:
    """Whether `path` is a directory holding a previous cbir export (its export.json)."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and MARKER_KEY in data


def check_target(out: Path) -> None:
    """Refuse `out` unless it is absent, an empty directory or a previous export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory; choose another --export")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ExportError(
            f"{out}: directory is not empty and is not a cbir export; choose another --export"
        )


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory next to `out`; on success it replaces `out`
    (absent, empty, or a previous export, which is deleted), else it is removed."""
    out = Path(out)
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield stage
        umask = os.umask(0)
        os.umask(umask)
        stage.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
        check_target(out)  # again: something may have appeared meanwhile
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):  # a previous export: move it aside first
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        try:
            os.rename(stage, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, out)  # replaces an empty directory atomically (POSIX)
