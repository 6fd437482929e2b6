"""Small file formats every layer uses: the sha256 of a file, and .npz state files
(encoder, local PCA) written whole and read without pickles; path arguments."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cbir.errors import BundleError


def one_or_many(value: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list:
    """Paths or names given to a Python call: one (a str is one, not its letters) or
    several -> a list."""
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """{name: array} of an .npz file; `BundleError` naming the file and `what` it holds
    when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable {what} ({exc})") from exc
