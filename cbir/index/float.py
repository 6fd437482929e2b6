"""Faiss float index over tile vectors (squared L2), with tile ids."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from cbir.index.faiss_io import write_float_index
from cbir.index.threads import threads_for
from cbir.recipes import IndexConfig


class FloatSearch:
    """Searching a Faiss float index `self.index` (squared L2) holding `self.ntotal` rows."""

    index: faiss.Index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) float32 -> D (nq, k) float32 squared L2, I (nq, k) int64 (-1 = none)."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        with threads_for(len(xq)):
            return self.index.search(xq, k)

    def search_tie_ordered(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k of one query (1, dim), equal distances ordered by id. D (m,), I (m,)."""
        D, I = self.search(xq, k)
        valid = I[0] >= 0
        D, I = D[0][valid], I[0][valid]
        order = np.lexsort((I, D))
        return D[order], I[order]

    def save(self, path: Path) -> None:
        write_float_index(self.index, path)


class FloatTileIndex(FloatSearch):
    """`IndexIDMap2(index_factory(dim, <float_factory>))`: "Flat" (exact), "HNSW32,Flat",
    "IVF1024,Flat", ... Removal rebuilds indexes that cannot remove (HNSW)."""

    kind = "float"

    def __init__(self, index: faiss.IndexIDMap2, cfg: IndexConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.set_search_params(cfg)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def nlist(self) -> int | None:
        inner = faiss.downcast_index(self.index.index)
        return int(inner.nlist) if isinstance(inner, faiss.IndexIVF) else None

    @property
    def nprobe(self) -> int:
        return self.cfg.nprobe

    def set_nprobe(self, nprobe: int) -> None:
        self.cfg = self.cfg.model_copy(update={"nprobe": nprobe})
        self.set_search_params(self.cfg)

    def set_search_params(self, cfg: IndexConfig) -> None:
        inner = faiss.downcast_index(self.index.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = cfg.ef_search
        if isinstance(inner, faiss.IndexIVF):
            inner.nprobe = cfg.nprobe

    @classmethod
    def for_collection(
        cls, dim: int, cfg: IndexConfig, xb: np.ndarray, ids: np.ndarray
    ) -> FloatTileIndex:
        """The recipe's float index holding (n, dim) float32 `xb` with int64 `ids`."""
        inner = faiss.index_factory(dim, cfg.float_factory, faiss.METRIC_L2)
        if not inner.is_trained:
            inner.train(np.ascontiguousarray(xb, dtype=np.float32))
        index = cls(faiss.IndexIDMap2(inner), cfg)
        index.add(xb, ids)
        return index

    @classmethod
    def template(cls, dim: int, cfg: IndexConfig, xt: np.ndarray) -> FloatTileIndex:
        """The empty index every segment starts from, trained on (n, dim) `xt` if the
        factory needs training (IVF)."""
        inner = faiss.index_factory(dim, cfg.float_factory, faiss.METRIC_L2)
        if not inner.is_trained:
            inner.train(np.ascontiguousarray(xt, dtype=np.float32))
        return cls(faiss.IndexIDMap2(inner), cfg)

    def emptied(self) -> FloatTileIndex:
        """A copy without rows (same training)."""
        index = faiss.deserialize_index(faiss.serialize_index(self.index))
        index.reset()
        return FloatTileIndex(index, self.cfg)

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector (n, dim) float32 with its id (n,) int64."""
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32), ids
        return self.index.index.reconstruct_n(0, self.ntotal), ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n,) stored ids -> their (n, dim) float32 vectors."""
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        if len(xb):
            self.index.add_with_ids(
                np.ascontiguousarray(xb, dtype=np.float32), ids.astype(np.int64)
            )

    def remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        try:
            return int(self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64))))
        except RuntimeError:  # HNSW cannot remove: rebuild without them
            vectors, all_ids = self.rows()
            keep = ~np.isin(all_ids, ids)
            rebuilt = FloatTileIndex.for_collection(
                self.dim, self.cfg, vectors[keep], all_ids[keep]
            )
            self.index = rebuilt.index
            return int((~keep).sum())

    def to_bytes(self) -> np.ndarray:
        """The index serialised (uint8), for another process (`from_bytes`)."""
        return faiss.serialize_index(self.index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, cfg: IndexConfig) -> FloatTileIndex:
        return cls(faiss.deserialize_index(data), cfg)

    @classmethod
    def load(cls, path: Path, cfg: IndexConfig) -> FloatTileIndex:
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path}: unexpected float index type {type(index).__name__}")
        return cls(index, cfg)
