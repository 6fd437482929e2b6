"""Region query (seed 000): a query of m x n tiles against same-shape sub-grids.

D(Q, B') = d_near(Q, B') + d_near(B', Q), with
d_near(Q, P) = (1 / |Q|) * sum_{q in Q} min_{p in P} Hamming(q, p).
Candidates are the sub-grids that contain, at the matching position, one of the
`seeds` nearest indexed tiles of some query tile (seed 000 takes sub-grids that share a
code with the query; nearest neighbours extend that to a small Hamming radius).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cbir.index.tile import TileIndex
from cbir.search.hamming import hamming_matrix
from cbir.storage.metadata import CodeGrid, MetadataStore


def d_near(dist: np.ndarray, valid_q: np.ndarray, valid_p: np.ndarray) -> np.ndarray:
    """d_near(Q, P) for a batch: dist (c, |Q|, |P|) Hamming; valid_* (c, |Q|), (c, |P|) bool.

    Mean over valid q of the min over valid p. Returns (c,) float64.
    """
    masked = np.where(valid_p[:, None, :], dist, np.inf)
    nearest = masked.min(axis=2).astype(np.float64)
    nearest = np.where(valid_q, nearest, 0.0)
    return nearest.sum(axis=1) / np.maximum(valid_q.sum(axis=1), 1)


def squared_l2_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., n, d) and (..., m, d) float32 -> (..., n, m) float64 squared L2 distances,
    as |a|^2 + |b|^2 - 2 a.b (a batched matrix product: no (..., n, m, d) difference
    array), clipped at 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    aa = np.einsum("...nd,...nd->...n", a, a)[..., :, None]
    bb = np.einsum("...md,...md->...m", b, b)[..., None, :]
    return np.maximum(aa + bb - 2.0 * (a @ np.swapaxes(b, -1, -2)), 0.0)


def region_distance(
    q: np.ndarray, p: np.ndarray, valid_p: np.ndarray, pairwise: Pairwise = hamming_matrix
) -> np.ndarray:
    """D(Q, B') for c candidates: q (k, e) query codes; p (c, k, e) candidate codes with
    valid_p (c, k) marking indexed cells; `pairwise` is Hamming on packed codes or squared
    L2 on float vectors. Returns (c,) float64."""
    c = len(p)
    dist = pairwise(np.broadcast_to(q, p.shape), p)  # (c, k, k): [cand, q, p]
    valid_q = np.ones((c, len(q)), dtype=bool)
    forward = d_near(dist, valid_q, valid_p)
    backward = d_near(dist.transpose(0, 2, 1), valid_p, valid_q)
    return forward + backward


Pairwise = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Elements of the largest intermediate array of one chunk of candidates (~64 MB).
CHUNK_ELEMENTS = 1 << 24
Decode = Callable[[np.ndarray], np.ndarray]


def _identity(raw: np.ndarray) -> np.ndarray:
    return raw


@dataclass(frozen=True)
class RegionCandidate:
    slide_id: int
    magnification: float
    r0: int
    c0: int
    distance: float
    valid: int  # indexed cells in the sub-grid


class GridCache:
    """Code grids loaded from LMDB on first use."""

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta
        self._grids: dict[tuple[int, float], CodeGrid | None] = {}

    def get(self, slide_id: int, magnification: float) -> CodeGrid | None:
        key = (slide_id, magnification)
        if key not in self._grids:
            self._grids[key] = self.meta.grid(slide_id, magnification)
        return self._grids[key]


def sub_grids(
    grid: CodeGrid, origins: np.ndarray, m: int, n: int, per_tile: int, decode: Decode
) -> tuple[np.ndarray, np.ndarray]:
    """The m x n tile sub-grids of `grid` whose top-left cells are `origins` (c, 2) (row,
    col; every cell inside the grid), tiles `per_tile` cells apart -> their codes
    (c, m * n, e) (stored bytes through `decode`) and indexed flags (c, m * n) bool."""
    rr = origins[:, 0, None, None] + per_tile * np.arange(m)[None, :, None]
    cc = origins[:, 1, None, None] + per_tile * np.arange(n)[None, None, :]
    codes = decode(grid.codes[rr, cc])
    return codes.reshape(len(origins), m * n, -1), grid.valid[rr, cc].reshape(-1, m * n)


def region_candidates(
    q: np.ndarray,
    index: TileIndex,
    meta: MetadataStore,
    grids: GridCache,
    seeds: int,
    min_valid: float,
    max_seeds: int | None = None,
    decode: Decode = _identity,
    pairwise: Pairwise = hamming_matrix,
    allowed: set[float] | None = None,
    per_tile: int = 1,
) -> list[RegionCandidate]:
    """All scored candidate sub-grids for query codes q (m, n, nb), sorted by D then place.

    Each query tile seeds its `seeds` nearest codes and every code tied with the last of
    them, up to `max_seeds`: short codes repeat across a large collection, and a cut-off
    inside a tie would drop the true region at random. `decode` turns stored grid bytes
    into codes (identity for packed bits, a float32 view for vectors); `pairwise` compares
    them (Hamming or squared L2). `allowed`: magnifications to consider (None: all).
    `per_tile`: grid cells per tile side (tile / stride): query tile (i, j) of a candidate
    at cell (r0, c0) is cell (r0 + per_tile * i, c0 + per_tile * j).
    """
    m, n, e = q.shape
    f = per_tile
    flat_q = q.reshape(m * n, e)
    D, I = index.search(flat_q, max(seeds, max_seeds or seeds))
    within = (D <= D[:, min(seeds, D.shape[1]) - 1 : min(seeds, D.shape[1])]) & (I >= 0)
    query_pos, col = np.nonzero(within)
    records = meta.tiles_of(I[query_pos, col])
    origins: dict[tuple[int, float], set[tuple[int, int]]] = defaultdict(set)
    for pos, rec in zip(query_pos.tolist(), records, strict=True):
        if rec is None or (allowed is not None and rec.magnification not in allowed):
            continue
        qi, qj = divmod(pos, n)
        origins[(rec.slide_id, rec.magnification)].add((rec.row - f * qi, rec.col - f * qj))
    out: list[RegionCandidate] = []
    need = max(1, int(np.ceil(min_valid * m * n)))
    for (sid, mag), starts in origins.items():
        grid = grids.get(sid, mag)
        if grid is None:
            continue
        g = grid.geometry
        rc = np.array(sorted(starts), dtype=np.int64).reshape(-1, 2)
        last_r, last_c = g.rows - (m - 1) * f - 1, g.cols - (n - 1) * f - 1
        ok = (rc[:, 0] >= 0) & (rc[:, 1] >= 0) & (rc[:, 0] <= last_r) & (rc[:, 1] <= last_c)
        rc = rc[ok]
        if not len(rc):
            continue
        sub_codes, sub_valid = sub_grids(grid, rc, m, n, f, decode)
        enough = sub_valid.sum(axis=1) >= need
        if not enough.any():
            continue
        # Chunks bound the (c, k, k, e) intermediate arrays to ~CHUNK_ELEMENTS elements.
        step = max(1, CHUNK_ELEMENTS // (len(flat_q) ** 2 * e))
        cand_codes, cand_valid = sub_codes[enough], sub_valid[enough]
        D = np.concatenate(
            [
                region_distance(
                    flat_q, cand_codes[i : i + step], cand_valid[i : i + step], pairwise
                )
                for i in range(0, len(cand_codes), step)
            ]
        )
        for (r0, c0), dist, nvalid in zip(
            rc[enough].tolist(), D.tolist(), sub_valid[enough].sum(axis=1).tolist(), strict=True
        ):
            out.append(RegionCandidate(sid, mag, r0, c0, dist, nvalid))
    out.sort(key=lambda c: (c.distance, c.slide_id, -c.magnification, c.r0, c.c0))
    return out


def suppress_overlaps(
    cands: list[RegionCandidate], m: int, n: int, k: int, per_tile: int = 1
) -> list[RegionCandidate]:
    """Greedy: keep the best candidate, drop those overlapping a kept one on the same slide
    and magnification (an m x n tile region spans m * per_tile cells); stop at k."""
    m, n = m * per_tile, n * per_tile
    kept: list[RegionCandidate] = []
    for c in cands:
        if any(
            o.slide_id == c.slide_id
            and o.magnification == c.magnification
            and abs(o.r0 - c.r0) < m
            and abs(o.c0 - c.c0) < n
            for o in kept
        ):
            continue
        kept.append(c)
        if len(kept) == k:
            break
    return kept
