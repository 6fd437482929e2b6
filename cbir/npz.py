"""Small .npz state files of a bundle (encoder, local PCA): written whole, read without
pickles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cbir.errors import BundleError


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
