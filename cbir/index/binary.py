"""Faiss binary index over tile codes, with tile ids: exact when small, IVF when large."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from cbir.index.faiss_io import read_flags, write_binary_index
from cbir.index.threads import threads_for
from cbir.recipes import IndexConfig

IndexKind = Literal["flat", "ivf"]

#: IVF training sample per list (Faiss wants 39..256).
TRAIN_PER_LIST = 64


def auto_nlist(n: int) -> int:
    """IVF list count for n codes: 4 * sqrt(n) rounded to a power of two, in [64, 65536]."""
    target = 4.0 * math.sqrt(max(n, 1))
    return int(min(65536, max(64, 2 ** round(math.log2(target)))))


class BinaryTileIndex:
    """Hamming search over (n, bits / 8) uint8 codes with int64 tile ids.

    `flat` is `IndexBinaryIDMap2(<exact_factory>)`; `ivf` is an `IndexBinaryIVF`
    (native ids and removal) trained on the collection.
    """

    def __init__(self, index: faiss.IndexBinary, kind: IndexKind, nprobe: int) -> None:
        self.index = index
        self.kind: IndexKind = kind
        self.set_nprobe(nprobe)

    @property
    def bits(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int | None:
        return int(self.index.nlist) if self.kind == "ivf" else None

    def set_nprobe(self, nprobe: int) -> None:
        self.nprobe = nprobe
        if self.kind == "ivf":
            self.index.nprobe = nprobe

    @classmethod
    def empty_exact(cls, bits: int, cfg: IndexConfig) -> BinaryTileIndex:
        inner = faiss.index_binary_factory(bits, cfg.exact_factory)
        return cls(faiss.IndexBinaryIDMap2(inner), "flat", cfg.nprobe)

    @classmethod
    def trained_ivf(
        cls, bits: int, cfg: IndexConfig, xt: np.ndarray, n_expected: int, seed: int = 1234
    ) -> BinaryTileIndex:
        """An empty IVF index trained on (nt, bits / 8) uint8 codes `xt`."""
        nlist = cfg.nlist or auto_nlist(n_expected)
        nlist = max(1, min(nlist, len(xt)))
        index = faiss.index_binary_factory(bits, f"BIVF{nlist}")
        index.cp.seed = seed
        max_train = TRAIN_PER_LIST * nlist
        if len(xt) > max_train:
            rng = np.random.default_rng(seed)
            xt = xt[np.sort(rng.choice(len(xt), max_train, replace=False))]
        index.train(np.ascontiguousarray(xt))
        return cls(index, "ivf", cfg.nprobe)

    @classmethod
    def for_collection(
        cls, bits: int, cfg: IndexConfig, xb: np.ndarray, ids: np.ndarray
    ) -> BinaryTileIndex:
        """The index a recipe asks for, holding codes `xb` with `ids`."""
        if len(xb) >= cfg.ivf_threshold:
            index = cls.trained_ivf(bits, cfg, xb, len(xb))
        else:
            index = cls.empty_exact(bits, cfg)
        index.add(xb, ids)
        return index

    @classmethod
    def template(cls, bits: int, cfg: IndexConfig, xt: np.ndarray) -> BinaryTileIndex:
        """The empty index every segment of a collection starts from: an IVF trained on
        the collection's codes `xt` (n, bits / 8) when it is large, else exact."""
        if len(xt) >= cfg.ivf_threshold:
            return cls.trained_ivf(bits, cfg, xt, len(xt))
        return cls.empty_exact(bits, cfg)

    def outgrown(self, cfg: IndexConfig, n: int) -> bool:
        """Whether an exact index should become an IVF at n tiles."""
        return self.kind == "flat" and n >= cfg.ivf_threshold

    def emptied(self) -> BinaryTileIndex:
        """A copy without rows (same IVF quantizer)."""
        index = faiss.deserialize_index_binary(faiss.serialize_index_binary(self.index))
        index.reset()
        return BinaryTileIndex(index, self.kind, self.nprobe)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        if len(xb):
            self.index.add_with_ids(np.ascontiguousarray(xb), ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids.astype(np.int64))))

    def coarse(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The IVF lists each query probes: (Dq, Iq) (nq, nprobe); None when exact.
        Segments sharing one quantizer search with one assignment (`assigned`)."""
        if self.kind != "ivf" or self.nprobe > self.index.nlist:
            return None  # (Faiss probes min(nprobe, nlist) lists: searched per segment)
        with threads_for(len(xq)):
            return self.index.quantizer.search(np.ascontiguousarray(xq), self.nprobe)

    def search(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(nq, bits / 8) uint8 -> D (nq, k) int32 Hamming, I (nq, k) int64 ids (-1 = none).
        `assigned`: the queries' probed lists from `coarse` (IVF with the same quantizer).

        A few queries run on one thread (`cbir.index.threads`).
        """
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        xq = np.ascontiguousarray(xq)
        with threads_for(len(xq)):
            if assigned is not None and self.kind == "ivf":
                return self.index.search_preassigned(xq, k, assigned[1], assigned[0])
            return self.index.search(xq, k)

    def search_tie_ordered(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k of one query (1, bits / 8), ties at equal distance broken by smaller id.

        When codes tied at the k-th distance may lie past the first search's 2k + 8, every
        code at or below that distance (in the probed lists) is fetched at once by a
        Faiss range search (radius: k-th distance + 1), or, with a preassignment or an
        index without range search, by widening the search; so the order does not
        depend on Faiss internals.
        Returns D (m,) int32, I (m,) int64 with m <= k.
        """
        asked = min(k * 2 + 8, self.ntotal)
        D, I = self._first(xq, asked, assigned)
        # more codes at the k-th distance may exist: the search was full, not exhaustive
        if len(D) > k and D[-1] == D[k - 1] and len(D) == asked < self.ntotal:
            if assigned is None and self.ranges:
                with threads_for(1):
                    lims, Dr, Ir = self.index.range_search(
                        np.ascontiguousarray(xq), int(D[k - 1]) + 1
                    )
                D, I = Dr[lims[0] : lims[1]].astype(np.int32), Ir[lims[0] : lims[1]]
            else:
                want = k
                while True:
                    want *= 4
                    D, I = self._first(xq, want * 2 + 8, assigned)
                    exhausted = len(I) < min(want * 2 + 8, self.ntotal)
                    if exhausted or D[-1] > D[k - 1] or want * 2 + 8 >= self.ntotal:
                        break
        order = np.lexsort((I, D))[:k]
        return D[order], I[order]

    @property
    def ranges(self) -> bool:
        """Whether Faiss range search works on this index (IVF, or exact over
        IndexBinaryFlat; not e.g. an HNSW `exact_factory`)."""
        if self.kind == "ivf":
            return True
        inner = faiss.downcast_IndexBinary(self.index.index)
        return isinstance(inner, faiss.IndexBinaryFlat)

    def _first(
        self, xq: np.ndarray, k: int, assigned: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest of one query, valid ids only: D (m,), I (m,)."""
        D, I = self.search(xq, k, assigned)
        valid = I[0] >= 0
        return D[0][valid], I[0][valid]

    def save(self, path: Path) -> None:
        write_binary_index(self.index, path)

    def to_bytes(self) -> np.ndarray:
        """The index serialised (uint8), for another process (`from_bytes`)."""
        return faiss.serialize_index_binary(self.index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, nprobe: int) -> BinaryTileIndex:
        index = faiss.deserialize_index_binary(data)
        kind: IndexKind = "ivf" if isinstance(index, faiss.IndexBinaryIVF) else "flat"
        return cls(index, kind, nprobe)

    @classmethod
    def load(cls, path: Path, nprobe: int, mmap: bool = False) -> BinaryTileIndex:
        """Read `path`; `mmap` maps its codes and lists (read-only use, see faiss_io)."""
        index = faiss.read_index_binary(str(path), read_flags(mmap))
        kind: IndexKind = "ivf" if isinstance(index, faiss.IndexBinaryIVF) else "flat"
        if kind == "flat" and not isinstance(index, faiss.IndexBinaryIDMap2):
            raise ValueError(f"{path}: unexpected binary index type {type(index).__name__}")
        return cls(index, kind, nprobe)
