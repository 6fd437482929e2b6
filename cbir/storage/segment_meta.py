"""The metadata of a bundle's segments read as one store: slides, grids and per-tile
products routed to the segment holding the slide (a tile id carries its slide id),
tombstoned slides left out, labels taken from the manifest."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np

from cbir.delf.stage import local_ids
from cbir.slides.grids import SLIDE_SHIFT, CodeGrid, TileRecord
from cbir.storage.metadata import MetadataStore, SlideRecord

T = TypeVar("T")


class SegmentedMeta:
    """Read-only view over segment stores (oldest first) minus `dead` slide ids. The same
    reads as MetadataStore, so the searchers take either."""

    def __init__(
        self,
        stores: Sequence[MetadataStore],
        dead: Sequence[frozenset[int]],
        labels: Mapping[int, dict[str, str]] | None = None,
        reference_limit: int | None = None,
        local_indexes: Sequence[object | None] | None = None,
    ) -> None:
        """`local_indexes`: each store's segment's local index (decodes descriptors)."""
        self.stores = list(stores)
        self._local_index = {
            id(st): ix for st, ix in zip(self.stores, local_indexes or [], strict=False)
        }
        self._labels = dict(labels or {})
        self._reference_limit = reference_limit
        self._slides: dict[int, SlideRecord] = {}
        self._where: dict[int, MetadataStore] = {}
        self._paths: dict[str, int] = {}
        for store, gone in zip(self.stores, dead, strict=True):
            for r in store.slide_list():
                if r.slide_id in gone:
                    continue
                if r.slide_id in self._labels:
                    r = r.model_copy(update={"labels": self._labels[r.slide_id]})
                self._slides[r.slide_id] = r
                self._where[r.slide_id] = store
                self._paths[r.info.path] = r.slide_id

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def store_of(self, slide_id: int) -> MetadataStore | None:
        return self._where.get(slide_id)

    # -- slides ------------------------------------------------------------------------
    def slide_list(self) -> list[SlideRecord]:
        return [self._slides[s] for s in sorted(self._slides)]

    def slide_id_for_path(self, path: str) -> int | None:
        return self._paths.get(path)

    def tile_count(self) -> int:
        return sum(r.tiles for r in self._slides.values())

    # -- grids and tiles ---------------------------------------------------------------
    def grid(self, slide_id: int, magnification: float) -> CodeGrid | None:
        store = self._where.get(slide_id)
        return None if store is None else store.grid(slide_id, magnification)

    def grids_of(self, slide_id: int) -> Iterator[CodeGrid]:
        store = self._where.get(slide_id)
        if store is not None:
            yield from store.grids_of(slide_id)

    def all_grids(self) -> Iterator[CodeGrid]:
        for sid in sorted(self._slides):
            yield from self._where[sid].grids_of(sid)

    def tile_ids_of(self, slide_id: int) -> np.ndarray:
        store = self._where.get(slide_id)
        return np.empty(0, np.int64) if store is None else store.tile_ids_of(slide_id)

    def tile(self, tile_id: int) -> TileRecord | None:
        store = self._where.get(tile_id >> SLIDE_SHIFT)
        return None if store is None else store.tile(tile_id)

    def tiles_of(self, tile_ids: np.ndarray) -> list[TileRecord | None]:
        """Records of tiles (None where unknown or removed), store by store."""
        return self._gathered(tile_ids, MetadataStore.tiles_of)

    def codes_of(self, tile_ids: np.ndarray) -> list[bytes | None]:
        """Stored code bytes of tiles (None where unknown or removed), store by store."""
        return self._gathered(tile_ids, MetadataStore.codes_of)

    def _gathered(
        self, tile_ids: np.ndarray, read: Callable[[MetadataStore, np.ndarray], list[T]]
    ) -> list[T | None]:
        """`read(store, ids)` of each store's tiles, put back in the order of tile_ids."""
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        out: list[T | None] = [None] * len(ids)
        for store, pos in self._by_store(ids):
            for p, value in zip(pos.tolist(), read(store, ids[pos]), strict=True):
                out[p] = value
        return out

    # -- per-tile products -------------------------------------------------------------
    def _by_store(self, tile_ids: np.ndarray) -> Iterator[tuple[MetadataStore, np.ndarray]]:
        """(store, positions into tile_ids) for the live tiles among tile_ids."""
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        if not len(ids):
            return
        if len(ids) <= 32:  # a tile query's hits: grouping in Python is faster
            groups: dict[int, list[int]] = {}
            for pos, tid in enumerate(ids.tolist()):
                store = self._where.get(tid >> SLIDE_SHIFT)
                if store is not None:
                    groups.setdefault(id(store), []).append(pos)
            for store in self.stores:
                if id(store) in groups:
                    yield store, np.asarray(groups[id(store)], np.int64)
            return
        slides, inverse = np.unique(ids >> SLIDE_SHIFT, return_inverse=True)
        owner = np.array([id(self._where.get(s)) for s in slides.tolist()], np.int64)
        stores = {id(st): st for st in self.stores}
        for key in np.unique(owner).tolist():
            if key in stores:
                yield stores[key], np.flatnonzero(owner[inverse] == key)

    def vectors_of(self, tile_ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored descriptors of tiles -> (n, dim) float32 (NaN rows where absent)."""
        out = np.full((len(tile_ids), dim), np.nan, dtype=np.float32)
        for store, pos in self._by_store(tile_ids):
            out[pos] = store.vectors_of(np.asarray(tile_ids)[pos], dim)
        return out

    def locals_of(
        self, tile_ids: np.ndarray, with_descriptors: bool = True
    ) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
        """{tile id: (points (n, 4), descriptors (n, d) or None)}; descriptors from the
        record, else decoded from the segment's local index."""
        out: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        for store, pos in self._by_store(tile_ids):
            got = store.locals_of(np.asarray(tile_ids)[pos], with_descriptors)
            index = self._local_index.get(id(store))
            need = [t for t, (_, d) in got.items() if d is None and with_descriptors]
            if need and index is not None:
                counts = np.array([len(got[t][0]) for t in need], np.int64)
                rows = index.reconstruct(local_ids(np.array(need, np.int64), counts))  # type: ignore[attr-defined]
                for t, part in zip(need, np.split(rows, np.cumsum(counts)[:-1]), strict=True):
                    got[t] = (got[t][0], part)
            out.update(got)
        return {int(t): out[int(t)] for t in np.asarray(tile_ids).tolist() if int(t) in out}

    def local_counts(self, tile_ids: np.ndarray) -> np.ndarray:
        counts = np.zeros(len(tile_ids), np.int64)
        for store, pos in self._by_store(tile_ids):
            counts[pos] = store.local_counts(np.asarray(tile_ids)[pos])
        return counts

    def local_feature_count(self) -> int:
        return sum(
            int(self._where[s].local_counts(self._where[s].tile_ids_of(s)).sum())
            for s in self._slides
        )

    def reference_tiles(self) -> dict[float, np.ndarray]:
        """Sample tissue tiles per magnification from every segment, oldest first, up to
        the bundle's limit: {mag: (r, t, t, 3) uint8}."""
        parts: dict[float, list[np.ndarray]] = {}
        for store in self.stores:
            for mag, tiles in store.reference_tiles().items():
                parts.setdefault(mag, []).append(tiles)
        return {
            mag: np.concatenate(tiles)[: self._reference_limit]
            for mag, tiles in sorted(parts.items())
        }
