"""The Faiss index over a collection's local descriptors (DELF, seed 003).

By default an IVF index with product-quantised codes (`IVF{nlist},PQ20`: 20 bytes and
an 8-byte id per 40-d descriptor) whose codes are the only stored copy of the
descriptors: verification decodes a tile's rows from it (`reconstruct`). Merges copy
the codes themselves (Faiss standalone codes: list number + code), so compaction never
re-quantises. Factories without IVF ("Flat", "HNSW32,Flat": bundles before compact
local features) are `FloatTileIndex`es behind an id map.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import faiss
import numpy as np

from cbir.index.binary import auto_nlist as binary_auto_nlist
from cbir.index.float import FloatSearch, FloatTileIndex
from cbir.recipes import LocalConfig

#: Rows a PQ needs to train its 256 centroids per sub-quantiser well (Faiss: 39 each).
MIN_PQ_TRAIN = 39 * 256
#: Codes of a collection too small to train a PQ on: the rows themselves (exact).
SMALL_CODES = "Flat"
#: Rows the quantisers are trained on (a seeded sample): at most this many, or 40 a
#: list when the collection's lists need more. Training is the fixed cost of a first
#: build with local features (k-means over the sample).
MAX_TRAIN = 100_000


def max_nlist(n: int) -> int:
    """The most IVF lists n training rows support: a power of two, at most n / 39 (Faiss
    wants 39 training rows a list), at least 1."""
    return 1 if n < 78 else int(2 ** math.floor(math.log2(n // 39)))


def auto_nlist(n: int) -> int:
    """IVF lists for n training rows: the tile index's rule (4 sqrt(n) as a power of two,
    at most 65536), at most `max_nlist(n)`."""
    return min(binary_auto_nlist(n), max_nlist(n))


def local_factory(cfg: LocalConfig, n: int) -> str:
    """The Faiss factory of a local index trained on n rows: the recipe's, its IVF lists
    ({nlist}: `cfg.nlist` or `auto_nlist(n)`) at most `max_nlist(n)`, and its PQ codes
    replaced by exact (Flat) codes when n is too small to train a PQ on."""
    factory = cfg.float_factory
    ivf = re.match(r"IVF(\{nlist\}|\d+)", factory)
    if ivf is None:
        return factory
    nlist = (cfg.nlist or auto_nlist(n)) if ivf.group(1) == "{nlist}" else int(ivf.group(1))
    head, _, codes = factory[ivf.end() :].partition(",")
    if n < MIN_PQ_TRAIN and codes.startswith("PQ"):
        codes = SMALL_CODES
    return f"IVF{min(nlist, max_nlist(n))}{head},{codes}"


class RowMap:
    """Where each row of an IVF index lives, by id: the sorted ids with their list and
    offset (16 bytes a row, against about 40 for Faiss's hash-table direct map) and a
    numpy view of each list's codes (no copy). Valid while the index is unchanged:
    bundle segments are written once."""

    def __init__(self, index: faiss.IndexIVF) -> None:
        self.index = index  # keeps the viewed memory alive
        invlists, size = index.invlists, int(index.code_size)
        self.views: list[np.ndarray | None] = []
        ids, lists, offsets = [], [], []
        for lno in range(int(index.nlist)):
            n = int(invlists.list_size(lno))
            if not n:
                self.views.append(None)
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(lno), n * size)
            self.views.append(np.asarray(codes).reshape(n, size))
            ids.append(faiss.rev_swig_ptr(invlists.get_ids(lno), n).copy())
            lists.append(np.full(n, lno, np.int32))
            offsets.append(np.arange(n, dtype=np.int32))
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order]
        self.lists = np.concatenate(lists)[order] if ids else np.zeros(0, np.int32)
        self.offsets = np.concatenate(offsets)[order] if ids else np.zeros(0, np.int32)

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """(m,) stored ids -> (m, sa_code_size) uint8 standalone codes (list + code)."""
        pos = np.searchsorted(self.ids, ids)
        found = pos < len(self.ids)
        found[found] = self.ids[pos[found]] == ids[found]
        if not found.all():
            raise KeyError(f"local ids not in the index: {ids[~found][:5].tolist()}")
        lists, offsets = self.lists[pos], self.offsets[pos]
        out = np.empty((len(ids), int(self.index.code_size)), np.uint8)
        order = np.argsort(lists, kind="stable")
        cuts = np.flatnonzero(np.diff(lists[order])) + 1
        for rows in np.split(order, cuts) if len(order) else []:
            out[rows] = self.views[int(lists[rows[0]])][offsets[rows]]  # type: ignore[index]
        head = int(self.index.coarse_code_size())
        prefix = lists.astype("<u8").view(np.uint8).reshape(len(ids), 8)[:, :head]
        return np.hstack([prefix, out])


class LocalCodeIndex(FloatSearch):
    """`IndexIVF` (PQ or Flat codes) with the local ids (tile id << 10 | row) as its ids;
    searched by approximate (asymmetric) squared L2."""

    kind = "float"

    def __init__(self, index: faiss.IndexIVF, cfg: LocalConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.index.nprobe = cfg.nprobe
        if isinstance(index, faiss.IndexIVFPQ):
            # no table of nlist x M x 256 floats per segment (84 MB at 4,096 lists); the
            # search computes the same distances without it
            index.use_precomputed_table = -1
            index.precompute_table()  # with -1: frees any table read or trained
        self._map: RowMap | None = None  # id -> (list, offset), built for reconstruct
        self._map_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @property
    def code_size(self) -> int:
        """Bytes of a standalone code: list number + the row's code."""
        return int(self.index.sa_code_size())

    def set_nprobe(self, nprobe: int) -> None:
        self.index.nprobe = nprobe

    @classmethod
    def template(cls, cfg: LocalConfig, factory: str, xt: np.ndarray) -> LocalCodeIndex:
        """An empty index of `factory` trained on (n, dim) float32 `xt`."""
        index = faiss.index_factory(xt.shape[1], factory, faiss.METRIC_L2)
        if not isinstance(index, faiss.IndexIVF):
            raise ValueError(f"local index factory {factory!r} is not an IVF index")
        if hasattr(index, "do_polysemous_training"):  # not searched by Hamming: 8x faster
            index.do_polysemous_training = False
        index.train(np.ascontiguousarray(xt, dtype=np.float32))
        return cls(index, cfg)

    def emptied(self) -> LocalCodeIndex:
        """A copy without rows (same training)."""
        index = faiss.clone_index(self.index)
        index.reset()
        return LocalCodeIndex(index, self.cfg)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> (n, code_size) uint8 standalone codes."""
        return self.index.sa_encode(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_size) uint8 -> (n, dim) float32 (the quantised vectors)."""
        return self.index.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row as its standalone code (n, code_size) uint8, with its id (n,) int64,
        in id order: `add` takes them back without re-quantising."""
        row_map = self._row_map()
        return row_map.codes(row_map.ids), row_map.ids

    def add(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, dim) float32 rows (quantised here) or (n, code_size) uint8 codes."""
        if not len(x):
            return
        self._map = None  # the lists move
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if x.dtype == np.uint8:
            self.index.add_sa_codes(np.ascontiguousarray(x), ids)
        else:
            self.index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), ids)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n,) stored local ids -> (n, dim) float32 decoded rows (KeyError for ids not
        stored). The row map is built on first use, in memory only (16 B a row)."""
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return self.decode(self._row_map().codes(np.asarray(ids, np.int64)))

    def _row_map(self) -> RowMap:
        """The row map, built once (whichever thread asks first) until rows are added."""
        if self._map is None:
            with self._map_lock:
                if self._map is None:
                    self._map = RowMap(self.index)
        return self._map


LocalIndex = LocalCodeIndex | FloatTileIndex


def outgrown(index: LocalIndex | None, cfg: LocalConfig, rows: int) -> bool:
    """Whether `index` got exact (Flat) codes for want of training rows, and a
    collection of `rows` local features now has enough to train the recipe's PQ."""
    if not isinstance(index, LocalCodeIndex) or isinstance(index.index, faiss.IndexIVFPQ):
        return False
    return rows >= MIN_PQ_TRAIN and ",PQ" in local_factory(cfg, rows)


def local_index_template(cfg: LocalConfig, xt: np.ndarray, seed: int = 0) -> LocalIndex:
    """The empty local index every segment starts from, for a collection of the
    (n, pca_dim) rows `xt`: its lists from n, trained on a seeded sample of them (at most
    max(MAX_TRAIN, 40 * lists) rows)."""
    factory = local_factory(cfg, len(xt))
    if not factory.startswith("IVF"):
        return FloatTileIndex.template(cfg.pca_dim, cfg.index_config(), xt)
    lists = re.match(r"IVF(\d+)", factory)
    keep = max(MAX_TRAIN, 40 * int(lists.group(1)) if lists else 0)
    if len(xt) > keep:
        xt = xt[np.sort(np.random.default_rng(seed).choice(len(xt), keep, replace=False))]
    return LocalCodeIndex.template(cfg, factory, xt)


def load_local_index(path: Path, cfg: LocalConfig) -> LocalIndex:
    """A stored local index: an IVF of codes, or an id-mapped float index."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    if isinstance(index, faiss.IndexIDMap2):
        return FloatTileIndex(index, cfg.index_config())
    if not isinstance(index, faiss.IndexIVF):
        raise ValueError(f"{path}: unexpected local index type {type(index).__name__}")
    return LocalCodeIndex(index, cfg)
