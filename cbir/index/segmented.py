"""Search over the Faiss indexes of a bundle's segments as if they were one index.

Each segment is searched for k plus its number of tombstoned rows (so k live rows are
among them whatever the tombstones), tombstoned ids are dropped, and the per-segment
lists are merged by (distance, id): with one collection-wide IVF quantizer and the same
nprobe, the merged top k equals that of a single index holding every live row, ties
included (`search_tie_ordered`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class RowIndex(Protocol):
    """What a segment's index offers: TileIndex, FloatTileIndex, or a Ray actor's proxy."""

    @property
    def ntotal(self) -> int: ...

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def search_tie_ordered(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Part:
    """One segment's index with its tombstones: slides whose rows no longer count, and
    how many rows that is. Row id >> `shift` is the row's slide id."""

    index: RowIndex
    dead_slides: frozenset[int] = frozenset()
    dead_rows: int = 0
    shift: int = 32
    _dead: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._dead = np.array(sorted(self.dead_slides), np.int64)

    @property
    def live(self) -> int:
        return self.index.ntotal - self.dead_rows

    def is_dead(self, ids: np.ndarray) -> np.ndarray:
        """(...) int64 ids -> bool mask of tombstoned rows (-1 is not dead)."""
        if not len(self._dead):
            return np.zeros(ids.shape, bool)
        return np.isin(ids >> self.shift, self._dead) & (ids >= 0)


def _merge(
    Ds: Sequence[np.ndarray], Is: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row merge of (nq, k_i) results by (distance, id); missing (-1) rows last.
    Returns D, I (nq, k) in the first part's dtype (-1 ids with the dtype's max)."""
    D, I = np.concatenate(Ds, axis=1), np.concatenate(Is, axis=1)
    missing = I < 0
    order = np.lexsort((I, D, missing), axis=1)[:, :k]
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:
        pad = k - D.shape[1]
        D = np.pad(D, ((0, 0), (0, pad)))
        I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
    fill = np.iinfo(D.dtype).max if D.dtype.kind in "iu" else np.finfo(D.dtype).max
    D[I < 0] = fill
    return D, I


#: A part's search: (queries (nq, e), k, their rows in the full batch or None) -> D, I.
Search = Callable[[np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def first_extra(p: Part, k: int) -> int:
    """Rows asked beyond k at first: the tombstoned rows, at most k (widened if short)."""
    return min(p.dead_rows, k)


def complete_single(
    p: Part, xq: np.ndarray, k: int, search: Search, first: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The part's tie-ordered top (k + extra) of one query, widened (x4) until k of them
    are live or the part is exhausted: its exact top k live rows are among them."""
    extra = first_extra(p, k)
    D, I = first if first is not None else search(xq, k + extra, None)
    while True:
        live = int((~p.is_dead(I)).sum())
        if live >= k or len(I) < k + extra or extra >= p.dead_rows:
            return D, I
        extra = min(p.dead_rows, extra * 4)
        D, I = search(xq, k + extra, None)


def complete_batch(
    p: Part, xq: np.ndarray, k: int, search: Search, first: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Batched: each row's top (k + extra), widened for the rows with fewer than k live
    of them. D, I (nq, m) with -1 ids where a row has fewer."""
    extra = first_extra(p, k)
    D, I = first if first is not None else search(xq, min(k + extra, p.index.ntotal), None)
    while extra < p.dead_rows and D.shape[1] < p.index.ntotal:
        short = np.flatnonzero(((I >= 0) & ~p.is_dead(I)).sum(axis=1) < k)
        if not len(short):
            break
        extra = min(p.dead_rows, extra * 4)
        more = min(k + extra, p.index.ntotal)
        D2, I2 = search(xq[short], more, short)
        width = D2.shape[1]
        fill = np.iinfo(D.dtype).max if D.dtype.kind in "iu" else np.finfo(D.dtype).max
        D = np.pad(D, ((0, 0), (0, width - D.shape[1])), constant_values=fill)
        I = np.pad(I, ((0, 0), (0, width - I.shape[1])), constant_values=-1)
        D[short], I[short] = D2, I2
    return D, I


class SegmentedIndex:
    """The live rows of several segment indexes, searched as one (same interface as
    BinaryTileIndex / FloatTileIndex for the searchers)."""

    def __init__(
        self, parts: Sequence[Part], kind: str, nprobe: int, nlist: int | None, dim: int
    ) -> None:
        self.parts = [p for p in parts if p.index.ntotal]
        self.kind = kind
        self.nprobe = nprobe
        self.nlist = nlist
        self.dim = dim  # bits of binary codes, dimensions of float vectors

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists probed per query, in every segment."""
        self.nprobe = nprobe
        for p in self.parts:
            p.index.set_nprobe(nprobe)  # type: ignore[attr-defined]

    @property
    def ntotal(self) -> int:
        return sum(p.live for p in self.parts)

    @property
    def segments(self) -> int:
        return len(self.parts)

    @property
    def approximate(self) -> bool:
        """Whether some segment's distances are of compressed float codes (IVF-PQ)."""
        return any(getattr(p.index, "approximate", False) for p in self.parts)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, e) -> D (nq, k'), I (nq, k') with k' = min(k, live rows) (at least 1),
        ordered by distance then id; -1 where fewer rows exist."""
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if len(self.parts) == 1 and not self.parts[0].dead_rows:
            return self.parts[0].index.search(xq, k)
        assigned = self._assigned(xq)
        outs = [(p, *complete_batch(p, xq, k, self._searcher(p, assigned))) for p in self.parts]
        return self.merge_batches(outs, k, len(xq))

    def _assigned(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The probed IVF lists of the queries, computed once for every segment (they
        share the collection's quantizer); None for exact or remote indexes."""
        first = self.parts[0].index if self.parts else None
        coarse = getattr(first, "coarse", None)
        if coarse is None or len(self.parts) < 2:
            return None
        nlist = getattr(first, "nlist", None)
        if any(getattr(p.index, "nlist", None) != nlist for p in self.parts):
            return None  # not one quantizer (an exact segment beside IVF ones)
        return coarse(xq)

    @staticmethod
    def _searcher(p: Part, assigned: tuple | None, tie_ordered: bool = False) -> Search:
        """A part's search over rows `rows` of the queries, with their assignment."""
        index: Any = p.index
        method = index.search_tie_ordered if tie_ordered else index.search

        def search(xq: np.ndarray, k: int, rows: np.ndarray | None) -> tuple:
            if assigned is None:
                return method(xq, k)
            a = assigned if rows is None else (assigned[0][rows], assigned[1][rows])
            return method(xq, k, a)

        return search

    @staticmethod
    def merge_batches(
        outs: Sequence[tuple[Part, np.ndarray, np.ndarray]], k: int, nq: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge per-part (D, I) (nq, k_i) after dropping tombstoned ids."""
        if not outs:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), -1, np.int64)
        return _merge(
            [D for _, D, _ in outs], [np.where(p.is_dead(I), -1, I) for p, _, I in outs], k
        )

    def search_tie_ordered(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k of one query (1, e), ties at equal distance by smaller id: each segment's
        tie-ordered top (k + its tombstoned rows), live rows merged. D (m,), I (m,)."""
        if len(self.parts) == 1 and not self.parts[0].dead_rows:
            return self.parts[0].index.search_tie_ordered(xq, k)
        assigned = self._assigned(xq)
        outs = [
            (p, *complete_single(p, xq, k, self._searcher(p, assigned, tie_ordered=True)))
            for p in self.parts
        ]
        return self.merge_single(outs, k)

    @staticmethod
    def merge_single(
        outs: Sequence[tuple[Part, np.ndarray, np.ndarray]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge per-part tie-ordered (D, I) (m_i,) of one query: top k by (D, id)."""
        Ds, Is = [], []
        for p, D, I in outs:
            live = ~p.is_dead(I)
            Ds.append(D[live])
            Is.append(I[live])
        if not Ds:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        D, I = np.concatenate(Ds), np.concatenate(Is)
        order = np.lexsort((I, D))[:k]
        return D[order], I[order]


def stacked_ivf(parts: Sequence[Part]) -> list[Part]:
    """Binary IVF segments (one collection quantizer) seen as one index: a read-only
    IndexBinaryIVF over their inverted lists side by side (Faiss HStackInvertedLists), so
    a query probes each list once instead of once per segment. Tombstones of every
    segment apply to it. Other parts are returned as they are."""
    import faiss

    from cbir.index.binary import BinaryTileIndex

    ivf = [p for p in parts if isinstance(p.index, BinaryTileIndex) and p.index.kind == "ivf"]
    if len(ivf) < 2 or len(ivf) != len(parts):
        return list(parts)
    first = ivf[0].index
    lists = faiss.InvertedListsPtrVector()
    for p in ivf:
        lists.push_back(p.index.index.invlists)  # type: ignore[attr-defined]
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    view = faiss.deserialize_index_binary(faiss.serialize_index_binary(first.emptied().index))
    view.replace_invlists(stacked, False)
    view.ntotal = sum(p.index.ntotal for p in ivf)
    index = BinaryTileIndex(view, "ivf", first.nprobe)
    index.keep_alive = (lists, stacked, [p.index for p in ivf])  # type: ignore[attr-defined]
    dead = frozenset().union(*(p.dead_slides for p in ivf))
    return [Part(index, dead, sum(p.dead_rows for p in ivf), ivf[0].shift)]
