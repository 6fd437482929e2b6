"""LMDB metadata: tile id -> tile record, slide registry, per-slide code grids."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lmdb
import numpy as np
from pydantic import BaseModel

from cbir.lmdb_file import check_lmdb_file
from cbir.slides.base import SlideInfo
from cbir.tiling import GridGeometry

#: LMDB map size: the file grows with the data, this is only the ceiling.
MAP_SIZE = 1 << 40

_TILE = struct.Struct("<IfIIqqqq")  # slide_id, magnification, row, col, x, y, w, h
_GRID_KEY = struct.Struct(">If")  # slide_id, magnification
# rows, cols, step, tile_size, stride (0: tile_size; format-2 bundles wrote tile_size as
# a uint32 whose high half is 0), code_bytes
_GRID_HEAD = struct.Struct("<IIdHHI")
_SLIDE_KEY = struct.Struct(">I")
_TILE_KEY = struct.Struct(">q")
_REF_KEY = struct.Struct(">f")  # magnification
_REF_HEAD = struct.Struct("<II")  # count, tile size
_LOCAL_HEAD = struct.Struct("<II")  # features, descriptor dim


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


class SlideRecord(BaseModel):
    """A slide in the bundle."""

    slide_id: int
    info: SlideInfo
    checksum: str
    added: str  # ISO time
    min_tissue_fraction: float
    magnifications: list[float]
    tiles: int
    labels: dict[str, str] = {}  # user labels (`cbir label`), e.g. {"diagnosis": "LUAD"}


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


def tile_key(tile_id: int) -> bytes:
    return _TILE_KEY.pack(tile_id)


class MetadataStore:
    """An LMDB environment with named databases tiles, slides, paths, grids."""

    def __init__(self, path: Path, readonly: bool) -> None:
        self.path = path
        check_lmdb_file(path)  # a truncated file would be SIGBUS on first read
        self.env = lmdb.open(
            str(path),
            map_size=MAP_SIZE,
            max_dbs=8,
            readonly=readonly,
            lock=not readonly,
            readahead=False,
            subdir=True,
            create=not readonly,
        )
        self.tiles = self.env.open_db(b"tiles", create=not readonly)
        self.slides = self.env.open_db(b"slides", create=not readonly)
        self.paths = self.env.open_db(b"paths", create=not readonly)
        self.grids = self.env.open_db(b"grids", create=not readonly)
        self.vectors = self.env.open_db(b"vectors", create=not readonly)
        self.refs = self.env.open_db(b"refs", create=not readonly)
        self.locals: object | None = None  # bundles written before local features lack it
        try:
            self.locals = self.env.open_db(b"locals", create=not readonly)
        except lmdb.NotFoundError:
            pass

    def close(self) -> None:
        self.env.close()

    def copy_to(self, path: Path) -> None:
        """Write a compacted copy of the environment into the empty directory `path`."""
        self.env.copy(str(path), compact=True)

    # -- reads -------------------------------------------------------------------------
    def tile(self, tile_id: int, txn: lmdb.Transaction | None = None) -> TileRecord | None:
        if txn is None:
            with self.env.begin() as t:
                return self.tile(tile_id, t)
        raw = txn.get(tile_key(tile_id), db=self.tiles)
        return TileRecord(*_TILE.unpack(raw)) if raw is not None else None

    def tiles_of(self, tile_ids: np.ndarray) -> list[TileRecord | None]:
        with self.env.begin() as txn:
            return [self.tile(int(i), txn) for i in tile_ids]

    def slide_list(self) -> list[SlideRecord]:
        with self.env.begin() as txn:
            return [SlideRecord.model_validate_json(v) for _, v in txn.cursor(db=self.slides)]

    def slide_id_for_path(self, path: str) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(path.encode(), db=self.paths)
        return _SLIDE_KEY.unpack(raw)[0] if raw is not None else None

    def tile_count(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self.tiles)["entries"])

    def grid(self, slide_id: int, magnification: float) -> CodeGrid | None:
        with self.env.begin() as txn:
            raw = txn.get(_GRID_KEY.pack(slide_id, magnification), db=self.grids)
        return None if raw is None else _decode_grid(slide_id, magnification, raw)

    def grids_of(self, slide_id: int) -> Iterator[CodeGrid]:
        prefix = _SLIDE_KEY.pack(slide_id)
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.grids)
            if cursor.set_range(prefix):
                for key, raw in cursor:
                    if not key.startswith(prefix):
                        break
                    sid, mag = _GRID_KEY.unpack(key)
                    yield _decode_grid(sid, mag, raw)

    def all_grids(self) -> Iterator[CodeGrid]:
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self.grids):
                sid, mag = _GRID_KEY.unpack(key)
                yield _decode_grid(sid, mag, raw)

    def vectors_of(self, tile_ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored descriptors of tiles -> (n, dim) float32 (NaN rows where absent)."""
        out = np.full((len(tile_ids), dim), np.nan, dtype=np.float32)
        with self.env.begin() as txn:
            for i, tid in enumerate(tile_ids.tolist()):
                raw = txn.get(tile_key(tid), db=self.vectors)
                if raw is not None:
                    out[i] = np.frombuffer(raw, dtype="<f4")
        return out

    def put_vectors(self, txn: lmdb.Transaction, tile_ids: np.ndarray, x: np.ndarray) -> None:
        """Store (n, d) float32 descriptors under their tile ids (for reranking)."""
        items = [
            (tile_key(int(t)), row.astype("<f4").tobytes())
            for t, row in zip(tile_ids.tolist(), x, strict=True)
        ]
        txn.cursor(db=self.vectors).putmulti(items, dupdata=False, overwrite=True)

    def put_locals(
        self, txn: lmdb.Transaction, tile_id: int, points: np.ndarray, descriptors: np.ndarray
    ) -> None:
        """Store a tile's local features: points (n, 4) [level-0 x, y, pyramid scale,
        attention] and (n, d) descriptors (kept as float16). Row j is Faiss local id
        (tile_id << LOCAL_ID_BITS) | j."""
        head = _LOCAL_HEAD.pack(len(points), descriptors.shape[1])
        blob = points.astype("<f4").tobytes() + descriptors.astype("<f2").tobytes()
        txn.put(tile_key(tile_id), head + blob, db=self.locals)

    def locals_of(
        self, tile_ids: np.ndarray, with_descriptors: bool = True
    ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """{tile id: (points (n, 4) float32, descriptors (n, d) float32 or None)} for the
        tiles that have local features."""
        out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if self.locals is None:
            return out
        with self.env.begin() as txn:
            for tid in tile_ids.tolist():
                raw = txn.get(tile_key(tid), db=self.locals)
                if raw is None:
                    continue
                n, d = _LOCAL_HEAD.unpack_from(raw)
                off = _LOCAL_HEAD.size
                points = np.frombuffer(raw, "<f4", count=4 * n, offset=off).reshape(n, 4)
                desc = None
                if with_descriptors:
                    desc = np.frombuffer(raw, "<f2", count=n * d, offset=off + 16 * n)
                    desc = desc.reshape(n, d).astype(np.float32)
                out[int(tid)] = (points, desc)
        return out

    def local_counts(self, tile_ids: np.ndarray) -> np.ndarray:
        """(n,) int64 local features stored per tile (0 where none)."""
        counts = np.zeros(len(tile_ids), np.int64)
        if self.locals is None:
            return counts
        with self.env.begin() as txn:
            for i, tid in enumerate(tile_ids.tolist()):
                raw = txn.get(tile_key(tid), db=self.locals)
                if raw is not None:
                    counts[i] = _LOCAL_HEAD.unpack_from(raw)[0]
        return counts

    def local_feature_count(self) -> int:
        if self.locals is None:
            return 0
        with self.env.begin() as txn:
            return sum(_LOCAL_HEAD.unpack_from(v)[0] for _, v in txn.cursor(db=self.locals))

    def reference_tiles(self) -> dict[float, np.ndarray]:
        """Sample tissue tiles per magnification: {mag: (r, t, t, 3) uint8} (scale detection)."""
        out = {}
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self.refs):
                (mag,) = _REF_KEY.unpack(key)
                count, t = _REF_HEAD.unpack_from(raw)
                tiles = np.frombuffer(raw, np.uint8, offset=_REF_HEAD.size)
                out[mag] = tiles.reshape(count, t, t, 3)
        return out

    def add_reference_tiles(
        self, txn: lmdb.Transaction, magnification: float, tiles: np.ndarray, limit: int
    ) -> None:
        """Append (n, t, t, 3) uint8 tiles to a magnification's references, up to `limit`."""
        key = _REF_KEY.pack(magnification)
        raw = txn.get(key, db=self.refs)
        if raw is not None:
            count, t = _REF_HEAD.unpack_from(raw)
            old = np.frombuffer(raw, np.uint8, offset=_REF_HEAD.size).reshape(count, t, t, 3)
            tiles = np.concatenate([old, tiles])
        tiles = np.ascontiguousarray(tiles[:limit])
        txn.put(key, _REF_HEAD.pack(len(tiles), tiles.shape[1]) + tiles.tobytes(), db=self.refs)

    def next_slide_id(self) -> int:
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.slides)
            if cursor.last():
                return _SLIDE_KEY.unpack(cursor.key())[0] + 1
        return 1

    # -- writes ------------------------------------------------------------------------
    def put_slide(self, txn: lmdb.Transaction, record: SlideRecord, grids: list[CodeGrid]) -> None:
        """Store a slide, its grids and one tile record per indexed cell."""
        sid = record.slide_id
        txn.put(_SLIDE_KEY.pack(sid), record.model_dump_json().encode(), db=self.slides)
        txn.put(record.info.path.encode(), _SLIDE_KEY.pack(sid), db=self.paths)
        for grid in grids:
            g = grid.geometry
            key = _GRID_KEY.pack(sid, g.magnification)
            head = _GRID_HEAD.pack(
                g.rows, g.cols, g.step, g.tile_size, g.stride, grid.codes.shape[-1]
            )
            txn.put(
                key, head + grid.ids.astype("<i8").tobytes() + grid.codes.tobytes(), db=self.grids
            )
            rr, cc = np.nonzero(grid.valid)
            xs, ys = g.origin(rr, cc)
            items = [
                (
                    tile_key(int(grid.ids[r, c])),
                    _TILE.pack(sid, g.magnification, r, c, int(x), int(y), g.size, g.size),
                )
                for r, c, x, y in zip(
                    rr.tolist(), cc.tolist(), xs.tolist(), ys.tolist(), strict=True
                )
            ]
            txn.cursor(db=self.tiles).putmulti(items, dupdata=False, overwrite=True)

    def put_slide_record(self, txn: lmdb.Transaction, record: SlideRecord) -> None:
        """Replace a stored slide's record (its labels, say); grids and tiles unchanged."""
        key = _SLIDE_KEY.pack(record.slide_id)
        if txn.get(key, db=self.slides) is None:
            raise KeyError(f"slide id {record.slide_id} is not stored")
        txn.put(key, record.model_dump_json().encode(), db=self.slides)

    def tile_ids_of(self, slide_id: int) -> np.ndarray:
        """(n,) int64 ids of a slide's tiles, grid by grid."""
        return _tile_ids(list(self.grids_of(slide_id)))

    def delete_slide(self, txn: lmdb.Transaction, record: SlideRecord) -> np.ndarray:
        """Delete a slide, its grids and tile records; returns its (n,) int64 tile ids."""
        sid = record.slide_id
        grids = list(self.grids_of(sid))
        ids = _tile_ids(grids)
        for tid in ids.tolist():
            txn.delete(tile_key(tid), db=self.tiles)
            txn.delete(tile_key(tid), db=self.vectors)
            if self.locals is not None:
                txn.delete(tile_key(tid), db=self.locals)
        for g in grids:
            txn.delete(_GRID_KEY.pack(sid, g.geometry.magnification), db=self.grids)
        txn.delete(_SLIDE_KEY.pack(sid), db=self.slides)
        txn.delete(record.info.path.encode(), db=self.paths)
        return ids


def _decode_grid(slide_id: int, magnification: float, raw: bytes) -> CodeGrid:
    rows, cols, step, tile_size, stride, nbytes = _GRID_HEAD.unpack_from(raw)
    off = _GRID_HEAD.size
    n = rows * cols
    ids = np.frombuffer(raw, dtype="<i8", count=n, offset=off).reshape(rows, cols)
    codes = np.frombuffer(raw, dtype=np.uint8, count=n * nbytes, offset=off + 8 * n)
    geometry = GridGeometry(magnification, rows, cols, step, tile_size, stride)
    return CodeGrid(slide_id, geometry, ids, codes.reshape(rows, cols, nbytes))


def _tile_ids(grids: list[CodeGrid]) -> np.ndarray:
    """(n,) int64 ids of the valid cells of grids, grid by grid."""
    if not grids:
        return np.empty(0, np.int64)
    return np.concatenate([g.ids[g.valid] for g in grids]).astype(np.int64)
