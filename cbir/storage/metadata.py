"""LMDB metadata of one segment: slide registry, per-slide code grids, and the per-tile
products stored by tile id (rerank vectors, local features) with scale references."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from pydantic import BaseModel

from cbir.slides.base import SlideInfo
from cbir.slides.grids import (
    GRID_KEY,
    CodeGrid,
    SlideTiles,
    TileRecord,
    code_span,
    decode_grid,
    encode_grid,
    layout_bytes,
)
from cbir.storage.lmdb_file import check_lmdb_file, reader_map_size, writer_map_size
from cbir.storage.local_points import decode_points, encode_points, feature_count

__all__ = ["CodeGrid", "MetadataStore", "SlideRecord", "TileRecord"]

_SLIDE_KEY = struct.Struct(">I")
_TILE_KEY = struct.Struct(">q")
_REF_KEY = struct.Struct(">f")  # magnification
_REF_HEAD = struct.Struct("<II")  # count, tile size


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

    def flat(self) -> dict[str, Any]:
        """Its fields and its slide's (name, path, size, magnification) in one dict: what
        the views of a slide (`cbir info`, the web page's slide list) pick from."""
        return {**self.info.model_dump(), **self.model_dump(exclude={"info"})}


def tile_key(tile_id: int) -> bytes:
    return _TILE_KEY.pack(tile_id)


#: Named databases of a store (format 2 also had "tiles": one record per tile).
DATABASES = (b"slides", b"paths", b"grids", b"vectors", b"refs", b"locals", b"mosaics", b"layouts")


_SHARED: dict[tuple, list] = {}  # (path, file identity) -> [store, references]
_SHARED_LOCK = threading.Lock()


def _release(key: tuple) -> bool:
    """Drop one reference to a shared store; True when it was the last."""
    with _SHARED_LOCK:
        entry = _SHARED[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _SHARED[key]
            return True
        return False


def _slide_values(cursor: lmdb.Cursor, slide_id: int) -> Iterator[tuple[bytes, Any]]:
    """(key, value) of a slide's grids; the value a view into the map in a `buffers`
    transaction. (py-lmdb touches every page of a value it hands out, so the map's pages
    are faulted in, clean and reclaimable, but not copied; iterating the cursor would
    also hand out the next slide's value.)"""
    prefix = _SLIDE_KEY.pack(slide_id)
    if not cursor.set_range(prefix):
        return
    while True:
        key = bytes(cursor.key())
        if not key.startswith(prefix):
            return
        yield key, cursor.value()
        if not cursor.next():
            return


class MetadataStore:
    """An LMDB environment with named databases slides, paths, grids, vectors, refs,
    locals, mosaics (cbir.storage.mosaics). `layout`: the bundle format its grids are
    stored in (2 or 3). Decoded grids are cached: stores are immutable once published."""

    def __init__(self, path: Path, readonly: bool, layout: int = 3) -> None:
        self.path = path
        self.layout = layout
        check_lmdb_file(path)  # a truncated file would be SIGBUS on first read
        self.env = lmdb.open(
            str(path),
            map_size=reader_map_size(path) if readonly else writer_map_size(),
            max_dbs=len(DATABASES) + 1,
            readonly=readonly,
            lock=not readonly,
            readahead=False,
            subdir=True,
            create=not readonly,
        )
        self.slides = self.env.open_db(b"slides", create=not readonly)
        self.paths = self.env.open_db(b"paths", create=not readonly)
        self.grids = self.env.open_db(b"grids", create=not readonly)
        self.vectors = self.env.open_db(b"vectors", create=not readonly)
        self.refs = self.env.open_db(b"refs", create=not readonly)
        # bundles written before local features, slide mosaics or layouts lack theirs
        self.locals = self._optional_db(b"locals", readonly)
        self.mosaics = self._optional_db(b"mosaics", readonly)
        # Each format-3 grid's value without its codes, so that the tile records of a
        # hit read a few hundred bytes, not the slide's codes (py-lmdb touches every
        # page of a value it returns: megabytes from the disk).
        self.layouts = self._optional_db(b"layouts", readonly) if layout >= 3 else None
        self._grids: dict[tuple[int, float], CodeGrid | None] = {}
        self._slide_tiles: dict[int, SlideTiles] = {}
        self._shared_key: tuple | None = None

    def _optional_db(self, name: bytes, readonly: bool) -> object | None:
        """A named database that older stores may lack (None there, when read)."""
        try:
            return self.env.open_db(name, create=not readonly)
        except lmdb.NotFoundError:
            return None

    def close(self) -> None:
        if self._shared_key is not None and not _release(self._shared_key):
            return  # another opened bundle still reads this (immutable) store
        self.env.close()

    @classmethod
    def open_shared(cls, path: Path, layout: int = 3) -> MetadataStore:
        """A read-only store shared by every bundle opened in this process (LMDB opens an
        environment once per process; segments outlive the manifests that list them).
        `close` releases it; the last release closes it."""
        data = path / "data.mdb"
        st = data.stat() if data.is_file() else None
        # A directory deleted and written again (a bundle rebuilt under the same name)
        # is another store: the key holds the data file's identity.
        key = (path.resolve(), None if st is None else (st.st_dev, st.st_ino))
        with _SHARED_LOCK:
            entry = _SHARED.get(key)
            if entry is None:
                store = cls(path, readonly=True, layout=layout)
                store._shared_key = key
                entry = _SHARED[key] = [store, 0]
            entry[1] += 1
            return entry[0]

    # -- reads -------------------------------------------------------------------------
    def _tiles(self, slide_id: int) -> SlideTiles:
        tiles = self._slide_tiles.get(slide_id)
        if tiles is None:
            grids = list(self.grids_of(slide_id, codes=False))  # the layout, not the codes
            tiles = self._slide_tiles[slide_id] = SlideTiles(grids)
        return tiles

    def tile(self, tile_id: int) -> TileRecord | None:
        return self._tiles(tile_id >> 32).record(tile_id)

    def tiles_of(self, tile_ids: np.ndarray) -> list[TileRecord | None]:
        """Records of tiles (None where unknown), derived from their slides' grids."""
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        if len(ids) <= 32:  # a tile query's hits: one by one is faster than vectorised
            return [self.tile(i) for i in ids.tolist()]
        out: list[TileRecord | None] = [None] * len(ids)
        slides = ids >> 32
        for sid in np.unique(slides).tolist():
            pos = np.flatnonzero(slides == sid)
            for p, rec in zip(pos.tolist(), self._tiles(sid).records(ids[pos]), strict=True):
                out[p] = rec
        return out

    def slide_list(self) -> list[SlideRecord]:
        with self.env.begin() as txn:
            return [SlideRecord.model_validate_json(v) for _, v in txn.cursor(db=self.slides)]

    def slide_id_for_path(self, path: str) -> int | None:
        with self.env.begin() as txn:
            raw = txn.get(path.encode(), db=self.paths)
        return _SLIDE_KEY.unpack(raw)[0] if raw is not None else None

    def tile_count(self) -> int:
        return sum(r.tiles for r in self.slide_list())

    def grid(self, slide_id: int, magnification: float) -> CodeGrid | None:
        key = (slide_id, magnification)
        if key not in self._grids:
            with self.env.begin() as txn:
                raw = txn.get(GRID_KEY.pack(slide_id, magnification), db=self.grids)
            self._grids[key] = (
                None if raw is None else decode_grid(slide_id, magnification, raw, self.layout)
            )
        return self._grids[key]

    def codes_of(self, tile_ids: np.ndarray) -> list[bytes | None]:
        """The stored code bytes of each tile (None where unknown), sliced from the LMDB
        map without decoding (or caching) whole grids: a float recipe's rerank copies a
        few hundred 2 KB codes, not the grids of every slide it touches."""
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        out: list[bytes | None] = [None] * len(ids)
        if self.layout == 2:  # bundles before format 3: from the decoded grids
            for p, rec in enumerate(self.tiles_of(ids)):
                grid = None if rec is None else self.grid(rec.slide_id, rec.magnification)
                if grid is not None and rec is not None:
                    out[p] = grid.codes[rec.row, rec.col].tobytes()
            return out
        with self.env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self.grids)
            for sid in np.unique(ids >> 32).tolist():
                pos = np.flatnonzero((ids >> 32) == sid)
                numbers = ids[pos] - (np.int64(sid) << 32)
                for _, raw in _slide_values(cursor, sid):
                    first, count, nbytes, offset = code_span(raw)
                    inside = (numbers >= first) & (numbers < first + count)
                    for p, t in zip(pos[inside].tolist(), numbers[inside].tolist(), strict=True):
                        at = offset + (t - first) * nbytes
                        out[p] = bytes(raw[at : at + nbytes])
        return out

    def grids_of(self, slide_id: int, codes: bool = True) -> Iterator[CodeGrid]:
        """The slide's grids, one per magnification. `codes` False: without codes, read
        in place from the LMDB map (the codes are not copied)."""
        db = self.grids if codes or self.layouts is None else self.layouts
        with self.env.begin(buffers=not codes) as txn:
            for key, raw in _slide_values(txn.cursor(db=db), slide_id):
                sid, mag = GRID_KEY.unpack(key)
                yield decode_grid(sid, mag, raw, self.layout, codes)  # copies what it keeps

    def all_grids(self) -> Iterator[CodeGrid]:
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self.grids):
                sid, mag = GRID_KEY.unpack(key)
                yield decode_grid(sid, mag, raw, self.layout)

    def tile_ids_of(self, slide_id: int) -> np.ndarray:
        """(n,) int64 ids of a slide's tiles, grid by grid."""
        return SlideTiles(list(self.grids_of(slide_id, codes=False))).ids()

    def vectors_of(self, tile_ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors of tiles -> (n, dim) float32 (NaN rows where absent); each row
        stored as float32 or float16 (told apart by its length)."""
        out = np.full((len(tile_ids), dim), np.nan, dtype=np.float32)
        with self.env.begin() as txn:
            for i, tid in enumerate(tile_ids.tolist()):
                raw = txn.get(tile_key(tid), db=self.vectors)
                if raw is not None:
                    out[i] = np.frombuffer(raw, dtype="<f2" if len(raw) == 2 * dim else "<f4")
        return out

    def put_vectors(self, txn: lmdb.Transaction, tile_ids: np.ndarray, x: np.ndarray) -> None:
        """Store (n, d) vectors under their tile ids (for reranking): float16 ones as
        float16, others as float32."""
        kind = "<f2" if x.dtype == np.float16 else "<f4"
        items = [
            (tile_key(int(t)), row.astype(kind).tobytes())
            for t, row in zip(tile_ids.tolist(), x, strict=True)
        ]
        txn.cursor(db=self.vectors).putmulti(items, dupdata=False, overwrite=True)

    def put_locals(self, txn: lmdb.Transaction, tile_id: int, points: np.ndarray) -> None:
        """Store a tile's local keypoints (n, 4) [level-0 x, y, pyramid scale, attention],
        quantised (cbir.storage.local_points); row j is Faiss local id (tile_id << LOCAL_ID_BITS)
        | j, whose descriptor is the local index's code."""
        txn.put(tile_key(tile_id), encode_points(points), db=self.locals)

    def locals_of(
        self, tile_ids: np.ndarray, with_descriptors: bool = True
    ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """{tile id: (points (n, 4) float32, descriptors (n, d) float32 or None)} for the
        tiles that have local features; descriptors only from records that hold them
        (bundles before compact local features: else the local index has them)."""
        out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if self.locals is None:
            return out
        with self.env.begin() as txn:
            for tid in tile_ids.tolist():
                raw = txn.get(tile_key(tid), db=self.locals)
                if raw is not None:
                    out[int(tid)] = decode_points(raw, with_descriptors)
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
                    counts[i] = feature_count(raw)
        return counts

    def local_feature_count(self) -> int:
        if self.locals is None:
            return 0
        with self.env.begin() as txn:
            return sum(feature_count(v) for _, v in txn.cursor(db=self.locals))

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

    # -- writes ------------------------------------------------------------------------
    def put_slide(self, txn: lmdb.Transaction, record: SlideRecord, grids: list[CodeGrid]) -> None:
        """Store a slide and its grids."""
        sid = record.slide_id
        txn.put(_SLIDE_KEY.pack(sid), record.model_dump_json().encode(), db=self.slides)
        txn.put(record.info.path.encode(), _SLIDE_KEY.pack(sid), db=self.paths)
        for grid in grids:
            key = GRID_KEY.pack(sid, grid.geometry.magnification)
            value = encode_grid(grid, self.layout)
            txn.put(key, value, db=self.grids)
            if self.layouts is not None:
                txn.put(key, value[: layout_bytes(value)], db=self.layouts)

    def copy_values(
        self, txn: lmdb.Transaction, source: MetadataStore, db: str, tile_ids: np.ndarray
    ) -> None:
        """Copy the values keyed by tile id of database `db` (vectors, locals) from
        another store."""
        target, origin = getattr(self, db), getattr(source, db)
        if target is None or origin is None:
            return
        with source.env.begin() as src:
            for tid in np.asarray(tile_ids).tolist():
                raw = src.get(tile_key(tid), db=origin)
                if raw is not None:
                    txn.put(tile_key(tid), raw, db=target)

    def value_count(self, db: str) -> int:
        """Entries of database `db`."""
        handle = getattr(self, db)
        if handle is None:
            return 0
        with self.env.begin() as txn:
            return int(txn.stat(handle)["entries"])
