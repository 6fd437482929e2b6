"""Writing Faiss indexes through Python's file I/O, so that a failed write (disk full,
quota, I/O error) is an OSError carrying its errno, which the bundle writer turns into
one line (cbir.storage.writer.write_failed), instead of the RuntimeError text of Faiss's own
`write_index`."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


def read_flags(mmap: bool) -> int:
    """Faiss read flags: with `mmap`, IO_FLAG_MMAP_IFC maps the file's large arrays (flat
    codes, IVF lists) instead of copying them into memory. Opening a segment then costs
    no reading, its pages are the OS's file cache (shared by every process that opens the
    bundle, dropped under memory pressure) and only what queries touch is read. The
    arrays are read-only: such an index is searched, serialised or copied, never added
    to or removed from. Segment files are immutable and replaced by new names, so a
    mapping stays valid while a writer publishes (an unlinked file lives until unmapped)."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", 0) if mmap else 0  # (older Faiss: read)


def write_serialized(path: Path, data: np.ndarray) -> None:
    """Write (n,) uint8 serialised index bytes to `path`, flushed to the OS."""
    with open(path, "wb") as fh:
        fh.write(memoryview(np.ascontiguousarray(data, np.uint8)))


def write_float_index(index: faiss.Index, path: Path) -> None:
    write_serialized(path, faiss.serialize_index(index))


def write_binary_index(index: faiss.IndexBinary, path: Path) -> None:
    write_serialized(path, faiss.serialize_index_binary(index))
