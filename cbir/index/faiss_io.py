"""Writing Faiss indexes through Python's file I/O, so that a failed write (disk full,
quota, I/O error) is an OSError carrying its errno, which the bundle writer turns into
one line (cbir.storage.writer.write_failed), instead of the RuntimeError text of Faiss's own
`write_index`."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


def write_serialized(path: Path, data: np.ndarray) -> None:
    """Write (n,) uint8 serialised index bytes to `path`, flushed to the OS."""
    with open(path, "wb") as fh:
        fh.write(memoryview(np.ascontiguousarray(data, np.uint8)))


def write_float_index(index: faiss.Index, path: Path) -> None:
    write_serialized(path, faiss.serialize_index(index))


def write_binary_index(index: faiss.IndexBinary, path: Path) -> None:
    write_serialized(path, faiss.serialize_index_binary(index))
