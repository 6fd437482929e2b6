"""Float16 rows of tile vectors in one flat file per segment, memory-mapped, read by
tile id: what a compressed float index's candidates are reordered by (exact squared
L2, `cbir.search.tiles.rerank_codes`).

A query reads a few hundred rows scattered over gigabytes. One page fault at a time
(LMDB values, or a mapped array indexed at once) waits for each read in turn: about
0.08 ms a row on this machine's disk, 20 ms for 256. Here every row's pages are first
announced to the kernel (`madvise(MADV_WILLNEED)`, which starts their reads at once),
then copied: the reads overlap, 4 ms for the same 256 (`tools/bench_float_index.py`).

Files (a segment's, written once, immutable):
    vectors.f16       (n, dim) float16 rows, little-endian, in the order they were staged
    vectors.runs.npy  (r, 3) int64 [first tile id, count, first row]: ids first .. first
                      + count - 1 lie in rows first row .. (a slide's tiles are numbered
                      consecutively, so a run is a grid or a slide)
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROWS_FILE, RUNS_FILE = "vectors.f16", "vectors.runs.npy"
_PAGE = mmap.PAGESIZE
_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)  # (not on every platform)


def id_runs(ids: np.ndarray, first_row: int = 0) -> np.ndarray:
    """(n,) int64 tile ids in row order -> (r, 3) int64 runs [first id, count, first
    row] of consecutive ids."""
    ids = np.asarray(ids, np.int64)
    if not len(ids):
        return np.zeros((0, 3), np.int64)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate([[0], breaks])
    counts = np.diff(np.concatenate([starts, [len(ids)]]))
    return np.column_stack([ids[starts], counts, starts + first_row]).astype(np.int64)


def write_rows(folder: Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int) -> int:
    """Write blocks of (n, dim) vectors with their (n,) tile ids as `ROWS_FILE` (float16)
    and `RUNS_FILE` in `folder`; the rows written."""
    runs, rows = [], 0
    with open(folder / ROWS_FILE, "wb") as fh:
        for x, ids in blocks:
            if not len(ids):
                continue
            if x.shape != (len(ids), dim):
                raise ValueError(f"rows of shape {x.shape} for {len(ids)} ids of {dim} dims")
            fh.write(np.ascontiguousarray(x, "<f2").tobytes())
            runs.append(id_runs(ids, rows))
            rows += len(ids)
    table = np.concatenate(runs) if runs else np.zeros((0, 3), np.int64)
    with open(folder / RUNS_FILE, "wb") as fh:
        np.save(fh, table[np.argsort(table[:, 0], kind="stable")], allow_pickle=False)
    return rows


class VectorRows:
    """A segment's rows, mapped read-only: `ntotal` rows of `dim` float16. The mapping
    lives as long as the reader (a replaced segment's unlinked file stays readable)."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.dim = dim
        self.row_bytes = 2 * dim
        runs = np.load(folder / RUNS_FILE, allow_pickle=False)
        if runs.ndim != 2 or runs.shape[1] != 3 or runs.dtype != np.int64:
            raise ValueError(f"{folder / RUNS_FILE}: not an (r, 3) int64 table of id runs")
        self.starts, self.counts, self.first = runs[:, 0], runs[:, 1], runs[:, 2]
        size = (folder / ROWS_FILE).stat().st_size
        if size % self.row_bytes:
            raise ValueError(f"{folder / ROWS_FILE}: {size} bytes is not rows of {dim} float16")
        self.ntotal = size // self.row_bytes
        if int(self.counts.sum()) != self.ntotal:
            raise ValueError(
                f"{folder / RUNS_FILE}: runs of {self.counts.sum()} rows, file {self.ntotal}"
            )
        self._map: mmap.mmap | None = None
        self._rows = np.zeros((0, dim), "<f2")
        if self.ntotal:
            fd = os.open(folder / ROWS_FILE, os.O_RDONLY)
            try:
                self._map = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            if hasattr(self._map, "madvise") and hasattr(mmap, "MADV_RANDOM"):
                self._map.madvise(mmap.MADV_RANDOM)  # no read-around: rows are scattered
            self._rows = np.frombuffer(self._map, "<f2").reshape(self.ntotal, dim)

    def locate(self, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 tile ids -> (n,) int64 their rows, -1 where not stored here."""
        ids = np.asarray(ids, np.int64)
        if not len(self.starts):
            return np.full(len(ids), -1, np.int64)
        run = np.maximum(np.searchsorted(self.starts, ids, side="right") - 1, 0)
        offset = ids - self.starts[run]
        inside = (offset >= 0) & (offset < self.counts[run])
        return np.where(inside, self.first[run] + offset, -1)

    def prefetch(self, rows: np.ndarray) -> None:
        """Start reading the pages of `rows` (all at once, without waiting)."""
        if self._map is None or _WILLNEED is None or not hasattr(self._map, "madvise"):
            return
        for r in np.unique(rows[rows >= 0]).tolist():
            at = r * self.row_bytes
            start = at - at % _PAGE
            self._map.madvise(_WILLNEED, start, at + self.row_bytes - start)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """(n,) rows (all >= 0) -> (n, dim) float32."""
        return self._rows[rows].astype(np.float32)


def rows_of(readers: Sequence[VectorRows], tile_ids: np.ndarray, dim: int) -> np.ndarray:
    """The stored rows of tiles over several segments' readers -> (n, dim) float32, NaN
    rows where no reader has the tile. Every row's read starts before any is copied."""
    ids = np.asarray(tile_ids, np.int64)
    out = np.full((len(ids), dim), np.nan, np.float32)
    found = [(r, r.locate(ids)) for r in readers]
    found = [(r, rows) for r, rows in found if (rows >= 0).any()]
    for r, rows in found:
        r.prefetch(rows)
    for r, rows in found:
        have = rows >= 0
        out[have] = r.gather(rows[have])
    return out
