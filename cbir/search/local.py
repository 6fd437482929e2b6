"""Local-feature search (seed 003): match query descriptors to the indexed ones, vote
per tile, group candidate tiles by slide and magnification, verify each group by RANSAC
(affine) and rank by inliers. Also verification of a coarse hit list (global retrieval
+ local verification)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbir.delf.extract import LOCAL_ID_BITS, LocalFeatures
from cbir.delf.stage import split_local_ids
from cbir.delf.verify import Verification, mutual_nearest, verify_matches
from cbir.errors import BundleError
from cbir.index.segmented import RowIndex
from cbir.recipes import LocalConfig
from cbir.storage.metadata import MetadataStore


@dataclass
class VerifiedGroup:
    """A candidate (slide, magnification) with its verification; affine maps query
    pixels to level-0 pixels of the slide."""

    slide_id: int
    magnification: float
    votes: int
    verification: Verification
    affine_level0: np.ndarray | None  # (2, 3)

    @property
    def inliers(self) -> int:
        return self.verification.inliers


def verify_level0(
    q_xy: np.ndarray, cand_xy_level0: np.ndarray, level0_per_px: float, cfg: LocalConfig
) -> tuple[Verification, np.ndarray | None]:
    """RANSAC on matched keypoints: query (m, 2) pixels -> candidate (m, 2) level-0 pixels.
    The fit runs in the candidate's own pixels (level-0 / `level0_per_px`) so the residual
    threshold means the same at every magnification. Returns the verification and the
    (2, 3) affine query -> level-0 (None when it failed)."""
    v = verify_matches(q_xy, cand_xy_level0 / level0_per_px, cfg.residual_px, cfg.max_trials)
    if v.affine is None:
        return v, None
    return v, np.asarray(v.affine, np.float64) * level0_per_px


def nearest_per_key(key: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Indices of the nearest entry (smallest dist; ties: the first) of each distinct key,
    in key order. key, dist: (m,) -> (distinct keys,) int64."""
    o = np.lexsort((dist, key))
    return o[np.r_[True, key[o][1:] != key[o][:-1]]] if len(o) else o


def one_to_one(a: np.ndarray, b: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Indices into matches (a[i], b[i]) at distance dist[i], all (m,), that use every a
    and every b at most once: the nearest match of each b, then the nearest of each a
    among those."""
    o = nearest_per_key(b, dist)
    return o[nearest_per_key(a[o], dist[o])]


def vote_and_verify(
    query: LocalFeatures,
    index: RowIndex,
    meta: MetadataStore,
    cfg: LocalConfig,
    base_magnification: dict[int, float],
    allowed: set[float] | None = None,
    slide_ids: set[int] | None = None,
) -> list[VerifiedGroup]:
    """Verified candidate groups, most inliers first (ties: votes, slide id, magnification).
    `base_magnification`: {slide id: its base magnification}; `allowed`: magnifications to
    keep (None: all); `slide_ids`: slides to keep (None: all), applied to the voted tiles
    before the top `cfg.candidates` are taken."""
    if len(query) == 0 or index.ntotal == 0:
        return []
    D, I = index.search(query.descriptors, cfg.neighbours)
    ok = (I >= 0) & (D <= cfg.max_distance**2)
    q_idx = np.nonzero(ok)[0]
    tile, row = split_local_ids(I[ok])
    dist = D[ok]
    # One vote per (query feature, tile): its nearest row in that tile.
    first = nearest_per_key(tile * len(query) + q_idx, dist)
    tile, row, q_idx, dist = tile[first], row[first], q_idx[first], dist[first]
    tiles, votes = np.unique(tile, return_counts=True)
    if slide_ids is not None:
        on = [r is not None and r.slide_id in slide_ids for r in meta.tiles_of(tiles)]
        tiles, votes = tiles[np.asarray(on, bool)], votes[np.asarray(on, bool)]
    top = tiles[np.lexsort((tiles, -votes))][: cfg.candidates]
    records = dict(zip(top.tolist(), meta.tiles_of(top), strict=True))
    groups: dict[tuple[int, float], list[int]] = {}
    for tid, rec in records.items():
        if rec is not None and (allowed is None or rec.magnification in allowed):
            groups.setdefault((rec.slide_id, rec.magnification), []).append(tid)
    points = meta.locals_of(np.asarray(list(records), np.int64), with_descriptors=False)
    out = []
    for (sid, mag), tids in groups.items():
        sel = np.isin(tile, tids)
        t, r, qi, d = tile[sel], row[sel], q_idx[sel], dist[sel]
        # One-to-one: many query features on one stored keypoint let RANSAC fit a
        # transform that squeezes the query onto it.
        keep = one_to_one(qi, t * (1 << LOCAL_ID_BITS) + r, d)
        cand = np.stack(
            [points[int(a)][0][int(b), :2] for a, b in zip(t[keep], r[keep], strict=True)]
        )
        v, affine = verify_level0(query.xy[qi[keep]], cand, base_magnification[sid] / mag, cfg)
        out.append(VerifiedGroup(sid, mag, int(len(np.unique(qi))), v, affine))
    out.sort(key=lambda g: (-g.inliers, -g.votes, g.slide_id, g.magnification))
    return out


def verify_tiles(
    query: LocalFeatures,
    meta: MetadataStore,
    tile_ids: np.ndarray,
    level0_per_px: float,
    cfg: LocalConfig,
    fetched: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> tuple[Verification, np.ndarray | None]:
    """Verify a query against the stored local features of some tiles (one hit):
    mutual nearest neighbours within cfg.max_distance, then RANSAC. `fetched`: those
    tiles' `meta.locals_of`, read beforehand for several hits at once."""
    if fetched is None:
        fetched = meta.locals_of(tile_ids)
    stored = {int(t): fetched[int(t)] for t in tile_ids.tolist() if int(t) in fetched}
    if not stored or len(query) == 0:
        return Verification(inliers=0, matches=0, affine=None), None
    if any(d is None for _, d in stored.values()):
        raise BundleError("local descriptors are missing for some tiles (no local index?)")
    pts = np.concatenate([p for p, _ in stored.values()])
    desc = np.concatenate([d for _, d in stored.values() if d is not None])
    qi, di = mutual_nearest(query.descriptors, desc, cfg.max_distance)
    return verify_level0(query.xy[qi], pts[di, :2], level0_per_px, cfg)
