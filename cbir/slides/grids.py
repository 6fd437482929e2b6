"""Code grids: the codes of one slide at one magnification laid out as its tile grid, how
they are stored in LMDB (bundle formats 2 and 3), and tile records derived from them.

Format 3 stores no per-tile record: a tile id is (slide id << 32) + n, the n-th indexed
cell of the slide counted grid by grid in row-major order, and the cell's row, column
and level-0 rectangle follow from the grid's geometry.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cbir.slides.tiling import GridGeometry

#: Bits of a tile id below the slide id.
SLIDE_SHIFT = 32

GRID_KEY = struct.Struct(">If")  # slide_id, magnification (big-endian: ordered by both)
# rows, cols, step, tile_size, stride (0: tile_size; format-2 bundles wrote tile_size as a
# uint32 whose high half is 0), code_bytes
_HEAD = struct.Struct("<IIdHHI")
_HEAD3 = struct.Struct("<II")  # format 3: first tile number, indexed cells


class TileRecord(NamedTuple):
    """One indexed tile; x, y, w, h in level-0 pixels."""

    slide_id: int
    magnification: float
    row: int
    col: int
    x: int
    y: int
    w: int
    h: int


@dataclass
class CodeGrid:
    """The codes of one slide at one magnification, laid out as its tile grid.

    ids: (rows, cols) int64 tile ids, -1 where the cell is not indexed (background).
    codes: (rows, cols, code_bytes) uint8, zeros where not indexed.
    """

    slide_id: int
    geometry: GridGeometry
    ids: np.ndarray
    codes: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.ids >= 0


def slide_of(tile_ids: np.ndarray) -> np.ndarray:
    """(n,) int64 tile ids -> (n,) int64 slide ids."""
    return np.asarray(tile_ids, np.int64) >> SLIDE_SHIFT


def encode_grid(grid: CodeGrid, layout: int = 3) -> bytes:
    """A grid's LMDB value. Format 3: head, first tile number and count, the valid mask
    packed to bits, the codes of the valid cells only (about code_bytes + 1/8 B a cell)."""
    g = grid.geometry
    head = _HEAD.pack(g.rows, g.cols, g.step, g.tile_size, g.stride, grid.codes.shape[-1])
    if layout == 2:
        return head + grid.ids.astype("<i8").tobytes() + grid.codes.tobytes()
    valid = grid.valid
    ids = grid.ids[valid]
    first = int(ids[0] - (np.int64(grid.slide_id) << SLIDE_SHIFT)) if len(ids) else 0
    if len(ids) and not np.array_equal(ids, ids[0] + np.arange(len(ids))):
        raise ValueError(f"slide {grid.slide_id}: tile ids of a grid are not consecutive")
    return (
        head
        + _HEAD3.pack(first, len(ids))
        + np.packbits(valid.ravel()).tobytes()
        + np.ascontiguousarray(grid.codes[valid]).tobytes()
    )


def code_span(raw: bytes | memoryview) -> tuple[int, int, int, int]:
    """Where a format-3 grid value keeps its codes: (first tile number, count, code
    bytes, offset of the first code); the code of tile number t lies at offset +
    (t - first) * code bytes."""
    rows, cols, _, _, _, nbytes = _HEAD.unpack_from(raw)
    first, count = _HEAD3.unpack_from(raw, _HEAD.size)
    return first, count, nbytes, _HEAD.size + _HEAD3.size + (rows * cols + 7) // 8


def layout_bytes(raw: bytes | memoryview) -> int:
    """Bytes of a format-3 grid value before its codes: what `decode_grid` with `codes`
    False reads (the codes' offset)."""
    return code_span(raw)[3]


def decode_grid(
    slide_id: int, magnification: float, raw: bytes, layout: int = 3, codes: bool = True
) -> CodeGrid:
    """A grid from its LMDB value; `codes` False leaves the codes out ((rows, cols, 0):
    the layout of the tiles alone, a fraction of the memory of float codes)."""
    rows, cols, step, tile_size, stride, nbytes = _HEAD.unpack_from(raw)
    nbytes_kept = nbytes if codes else 0
    geometry = GridGeometry(magnification, rows, cols, step, tile_size, stride)
    off, n = _HEAD.size, rows * cols
    if layout == 2:
        ids = np.frombuffer(raw, dtype="<i8", count=n, offset=off).reshape(rows, cols)
        if not codes:
            return CodeGrid(slide_id, geometry, ids.copy(), np.zeros((rows, cols, 0), np.uint8))
        cells = np.frombuffer(raw, dtype=np.uint8, count=n * nbytes, offset=off + 8 * n)
        return CodeGrid(slide_id, geometry, ids, cells.reshape(rows, cols, nbytes))
    first, count = _HEAD3.unpack_from(raw, off)
    off += _HEAD3.size
    packed = np.frombuffer(raw, np.uint8, count=(n + 7) // 8, offset=off)
    valid = np.unpackbits(packed, count=n).astype(bool).reshape(rows, cols)
    off += len(packed)
    ids = np.full((rows, cols), -1, np.int64)
    ids[valid] = (np.int64(slide_id) << SLIDE_SHIFT) + first + np.arange(count, dtype=np.int64)
    kept = np.zeros((rows, cols, nbytes_kept), np.uint8)
    if codes:
        kept[valid] = np.frombuffer(raw, np.uint8, count=count * nbytes, offset=off).reshape(
            count, nbytes
        )
    return CodeGrid(slide_id, geometry, ids, kept)


class SlideTiles:
    """Tile number -> cell of one slide's grids: records derived from the geometry."""

    def __init__(self, grids: list[CodeGrid]) -> None:
        self.grids = sorted(grids, key=lambda g: int(g.ids[g.valid][0]) if g.valid.any() else 0)
        self.firsts = np.array(
            [int(g.ids[g.valid][0]) if g.valid.any() else -1 for g in self.grids], np.int64
        )
        self.cells = [np.flatnonzero(g.valid) for g in self.grids]
        self._firsts = self.firsts.tolist()
        # per grid: slide id, magnification, columns, step, tile side (level-0 px)
        self._shape = [
            (
                g.slide_id,
                g.geometry.magnification,
                g.geometry.cols,
                g.geometry.step,
                g.geometry.size,
            )
            for g in self.grids
        ]

    def record(self, tile_id: int) -> TileRecord | None:
        """The tile's record, None if the slide has no such tile."""
        i = bisect.bisect_right(self._firsts, tile_id) - 1
        if i < 0:
            return None
        n = tile_id - self._firsts[i]
        cells = self.cells[i]
        if n >= len(cells):
            return None
        sid, mag, cols, step, size = self._shape[i]
        r, c = divmod(int(cells[n]), cols)
        x, y = round(c * step), round(r * step)  # as GridGeometry.origin (half to even)
        return TileRecord(sid, mag, r, c, x, y, size, size)

    def records(self, tile_ids: np.ndarray) -> list[TileRecord | None]:
        """Records of many tiles of this slide at once (None for unknown ids)."""
        tile_ids = np.asarray(tile_ids, np.int64)
        out: list[TileRecord | None] = [None] * len(tile_ids)
        which = np.searchsorted(self.firsts, tile_ids, side="right") - 1
        for i in np.unique(which).tolist():
            if i < 0:
                continue
            pos = np.flatnonzero(which == i)
            n = tile_ids[pos] - self.firsts[i]
            cells, grid = self.cells[i], self.grids[i]
            ok = n < len(cells)
            pos, n = pos[ok], n[ok]
            g = grid.geometry
            r, c = np.divmod(cells[n], g.cols)
            x, y = g.origin(r, c)
            sid, mag, size = grid.slide_id, g.magnification, g.size
            for p, rr, cc, xx, yy in zip(
                pos.tolist(), r.tolist(), c.tolist(), x.tolist(), y.tolist(), strict=True
            ):
                out[p] = TileRecord(sid, mag, rr, cc, xx, yy, size, size)
        return out

    def ids(self) -> np.ndarray:
        """(n,) int64 ids of the slide's tiles, grid by grid."""
        if not self.grids:
            return np.empty(0, np.int64)
        return np.concatenate([g.ids[g.valid] for g in self.grids]).astype(np.int64)
