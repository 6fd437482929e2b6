"""Slide mosaics as stored: per slide, the tile ids of its mosaic (cbir.slides.mosaic)
and its mean-pooled code vector (the coarse stage of a slide query), in the segment's
LMDB database "mosaics" keyed by slide id. Bundles written before mosaics lack the
database; their slides' mosaics are made from the stored grids when asked for."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir.slides.grids import CodeGrid
from cbir.slides.mosaic import SlideMosaic, grid_mosaic

if TYPE_CHECKING:
    from cbir.storage.metadata import MetadataStore

_KEY = struct.Struct(">I")  # slide id
_HEAD = struct.Struct("<fII")  # magnification, mosaic tiles, pooled dimension


@dataclass(frozen=True)
class StoredMosaic:
    """A slide's mosaic: `tile_ids` (m,) int64 at `magnification`; `pooled` (d,) float32
    unit vector, the mean of its codes at that magnification (bits as 0/1, centred)."""

    magnification: float
    tile_ids: np.ndarray
    pooled: np.ndarray


def pooled_vector(codes: np.ndarray, binary: bool) -> np.ndarray:
    """(n, e) codes (packed bits, or float vectors) -> (d,) float32 unit mean vector
    (bits count as -1 / +1, so that random codes pool to about 0)."""
    x = np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1 if binary else codes
    mean = np.asarray(x, np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def mosaic_from_grid(
    grid: CodeGrid, decode: Any, binary: bool, mosaic: SlideMosaic | None = None
) -> StoredMosaic:
    """A slide's StoredMosaic from its code grid at the mosaic's magnification; `mosaic`
    None: chosen by place from the grid (no colours: a bundle written before mosaics,
    or a slide described without its thumbnail)."""
    valid = grid.valid
    if mosaic is None:
        mosaic = grid_mosaic(grid.geometry, valid, None)
    codes = decode(grid.codes[valid])
    return StoredMosaic(
        grid.geometry.magnification, grid.ids[valid][mosaic.cells], pooled_vector(codes, binary)
    )


def encode_mosaic(m: StoredMosaic) -> bytes:
    head = _HEAD.pack(m.magnification, len(m.tile_ids), len(m.pooled))
    return head + m.tile_ids.astype("<i8").tobytes() + m.pooled.astype("<f4").tobytes()


def decode_mosaic(raw: bytes) -> StoredMosaic:
    mag, m, d = _HEAD.unpack_from(raw)
    ids = np.frombuffer(raw, "<i8", m, _HEAD.size).astype(np.int64)
    pooled = np.frombuffer(raw, "<f4", d, _HEAD.size + 8 * m).astype(np.float32)
    return StoredMosaic(float(mag), ids, pooled)


def put_mosaic(store: MetadataStore, txn: Any, slide_id: int, m: StoredMosaic) -> None:
    txn.put(_KEY.pack(slide_id), encode_mosaic(m), db=store.mosaics)


def read_mosaic(store: MetadataStore, slide_id: int) -> StoredMosaic | None:
    """The stored mosaic of a slide (None: the store has none for it)."""
    if store.mosaics is None:
        return None
    with store.env.begin() as txn:
        raw = txn.get(_KEY.pack(slide_id), db=store.mosaics)
    return None if raw is None else decode_mosaic(raw)


def copy_mosaics(store: MetadataStore, txn: Any, source: MetadataStore, slides: set[int]) -> None:
    """Copy the stored mosaics of `slides` from another store (a merge)."""
    if source.mosaics is None or store.mosaics is None:
        return
    with source.env.begin() as src:
        for sid in sorted(slides):
            raw = src.get(_KEY.pack(sid), db=source.mosaics)
            if raw is not None:
                txn.put(_KEY.pack(sid), raw, db=store.mosaics)
