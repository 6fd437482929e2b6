"""Faiss float index over tile vectors (squared L2), with tile ids.

The recipe's `float_factory` is any Faiss factory string: "Flat" (exact), "HNSW32,Flat",
or a compressed IVF such as "IVF{nlist},PQ46" (46 bytes a 552-d vector; `{nlist}`: the
recipe's nlist, else sqrt(n) as a power of two, at most n / 39). An IVF factory
applies from `ivf_threshold` tiles on; a smaller collection is exact (Flat), and grows
into the IVF when `add` or `compact` finds it past the threshold. Compressed distances
are approximate: such recipes set `rerank` (cbir.search.tiles.rerank_codes), which
orders the top candidates by squared L2 on float16 copies of the tile vectors (the
`rows` artifact, cbir.storage.vector_rows).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import faiss
import numpy as np

from cbir.index.faiss_io import read_flags, write_float_index
from cbir.index.threads import threads_for
from cbir.recipes import IndexConfig

#: Training rows per IVF list, at least (Faiss warns below 39) and at most (a seeded
#: sample: k-means over more adds time, not accuracy).
MIN_TRAIN_PER_LIST, MAX_TRAIN_PER_LIST = 39, 64
#: Rows a PQ with 8-bit sub-quantisers needs (256 centroids, 39 rows each).
MIN_PQ_TRAIN = 39 * 256


def is_ivf(factory: str) -> bool:
    return re.match(r"(OPQ\d+(_\d+)?,)?IVF", factory) is not None


def float_factory(cfg: IndexConfig, n: int) -> str:
    """The Faiss factory of a float index for n tiles: the recipe's, its IVF lists
    resolved, or "Flat" below `ivf_threshold` (or too few rows to train a PQ on)."""
    factory = cfg.float_factory
    if not is_ivf(factory):
        return factory
    if n < cfg.ivf_threshold or n < MIN_PQ_TRAIN:
        return "Flat"
    most = 2 ** math.floor(math.log2(max(n // MIN_TRAIN_PER_LIST, 1)))
    auto = int(min(65536, max(64, 2 ** round(math.log2(math.sqrt(n))))))
    nlist = min(cfg.nlist or auto, most)
    return factory.replace("{nlist}", str(nlist))


def _wrapped(inner: faiss.Index) -> faiss.Index:
    """Tile ids over an index: IndexIDMap2 (reconstruct by id) over exact and HNSW
    indexes; IndexIDMap over IVF (16 bytes of ids a row, not IDMap2's hash table)."""
    ivf = faiss.try_extract_index_ivf(inner) is not None
    return faiss.IndexIDMap(inner) if ivf else faiss.IndexIDMap2(inner)


class FloatSearch:
    """Searching a Faiss float index `self.index` (squared L2) holding `self.ntotal` rows."""

    index: faiss.Index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) float32 -> D (nq, k) float32 squared L2, I (nq, k) int64 (-1 = none).
        `assigned`: the queries' probed IVF lists from `coarse` (same quantizer)."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        with threads_for(len(xq)):
            if assigned is not None and self.ivf is not None:
                return self.search_preassigned(xq, k, assigned)
            return self.index.search(xq, k)

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        """The IVF a query's probed lists can be given to (None: exact, HNSW, OPQ)."""
        return None

    def search_preassigned(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def coarse(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The IVF lists each query (nq, dim) probes: (Dq, Iq) (nq, nprobe); None where
        the index has no IVF to give them to. Segments sharing one quantizer search with
        one assignment (`assigned`) instead of one quantizer search each."""
        ivf = self.ivf
        if ivf is None or ivf.nprobe > ivf.nlist:
            return None  # (Faiss probes min(nprobe, nlist) lists: searched per segment)
        with threads_for(len(xq)):
            return ivf.quantizer.search(np.ascontiguousarray(xq, dtype=np.float32), ivf.nprobe)

    def search_tie_ordered(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k of one query (1, dim), equal distances ordered by id. D (m,), I (m,)."""
        D, I = self.search(xq, k, assigned)
        valid = I[0] >= 0
        D, I = D[0][valid], I[0][valid]
        order = np.lexsort((I, D))
        return D[order], I[order]

    def save(self, path: Path) -> None:
        write_float_index(self.index, path)


class FloatTileIndex(FloatSearch):
    """`IndexIDMap2(index_factory(dim, <float_factory>))`: "Flat" (exact), "HNSW32,Flat",
    or `IndexIDMap` over an IVF ("IVF1024,PQ46", ...). Removal rebuilds indexes that
    cannot remove (HNSW)."""

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
        ivf = faiss.try_extract_index_ivf(self.index.index)
        return int(ivf.nlist) if ivf is not None else None

    @property
    def ivf(self) -> faiss.IndexIVF | None:
        """The IVF under the id map when queries go to it untransformed (not OPQ)."""
        inner = faiss.downcast_index(self.index.index)
        return inner if isinstance(inner, faiss.IndexIVF) else None

    def search_preassigned(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The IVF's search over the given lists (Dq, Iq) (nq, nprobe), its row numbers
        mapped to tile ids through the id map (read in place)."""
        ivf = self.ivf
        assert ivf is not None
        if not self.ntotal:
            return self.index.search(xq, k)
        D, rows = ivf.search_preassigned(xq, k, assigned[1], assigned[0])
        ids = faiss.rev_swig_ptr(self.index.id_map.data(), self.ntotal)
        found = rows >= 0
        return D, np.where(found, ids[np.where(found, rows, 0)], -1).astype(np.int64)

    @property
    def approximate(self) -> bool:
        """Whether distances are of compressed codes (IVF with PQ or SQ codes)."""
        ivf = faiss.try_extract_index_ivf(self.index.index)
        return ivf is not None and not isinstance(ivf, faiss.IndexIVFFlat)

    def outgrown(self, cfg: IndexConfig, n: int) -> bool:
        """Whether an exact index of a recipe with an IVF factory should become that IVF
        at n tiles (`cbir.storage.compact.retrain_index`)."""
        return self.nlist is None and float_factory(cfg, n) != "Flat" and is_ivf(cfg.float_factory)

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
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:
            ivf.nprobe = cfg.nprobe

    @classmethod
    def for_collection(
        cls, dim: int, cfg: IndexConfig, xb: np.ndarray, ids: np.ndarray
    ) -> FloatTileIndex:
        """The recipe's float index holding (n, dim) float32 `xb` with int64 `ids`."""
        index = cls.template(dim, cfg, xb)
        index.add(xb, ids)
        return index

    @classmethod
    def template(cls, dim: int, cfg: IndexConfig, xt: np.ndarray) -> FloatTileIndex:
        """The empty index every segment starts from, trained on (n, dim) `xt` if the
        factory needs training (IVF: on a seeded sample of at most MAX_TRAIN_PER_LIST rows
        a list, and at least MIN_PQ_TRAIN)."""
        inner = faiss.index_factory(dim, float_factory(cfg, len(xt)), faiss.METRIC_L2)
        if not inner.is_trained:
            ivf = faiss.try_extract_index_ivf(inner)
            most = MAX_TRAIN_PER_LIST * (int(ivf.nlist) if ivf is not None else 1)
            most = max(most, MIN_PQ_TRAIN)
            if len(xt) > most:
                rng = np.random.default_rng(1234)
                xt = xt[np.sort(rng.choice(len(xt), most, replace=False))]
            inner.train(np.ascontiguousarray(xt, dtype=np.float32))
        return cls(_wrapped(inner), cfg)

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
    def load(cls, path: Path, cfg: IndexConfig, mmap: bool = False) -> FloatTileIndex:
        """Read `path`; `mmap` maps its vectors and lists (read-only use, see faiss_io)."""
        index = faiss.read_index(str(path), read_flags(mmap))
        if not isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
            raise ValueError(f"{path}: unexpected float index type {type(index).__name__}")
        return cls(index, cfg)
