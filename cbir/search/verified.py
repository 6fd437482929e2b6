"""Searches ranked by local-feature RANSAC inliers (`--verify`, seed 003): verifying a
global search's hits, or voting with the query's local features and fitting one
transform per (slide, magnification)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cbir.delf.extract import LocalFeatures
from cbir.search.collection import Collection
from cbir.search.hits import Hit, SearchResult
from cbir.search.local import VerifiedGroup, verify_tiles, vote_and_verify
from cbir.search.similarity import INLIERS

#: (scale, query tiles maker) -> (magnifications to search or None, P(same scale)).
ScaleSelect = Callable[[str], set[float] | None]


def _level0_per_px(col: Collection, slide_id: int, magnification: float) -> float:
    return col.slides[slide_id].info.base_magnification / magnification


def _tiles_of(col: Collection, h: Hit) -> np.ndarray:
    """The tile ids a hit covers: its tile, or a region's tiles. (n,) int64."""
    if h.tile_id is not None:
        return np.array([h.tile_id], np.int64)
    g = col.grids.get(h.slide_id, h.magnification)
    f = g.geometry.per_tile  # a region of rows x cols tiles spans this many cells
    rows, cols = (h.rows - 1) * f + 1, (h.cols - 1) * f + 1
    block = g.ids[h.row : h.row + rows, h.col : h.col + cols]
    return block[block >= 0].astype(np.int64)


def verify_hits(col: Collection, features: LocalFeatures, hits: list[Hit], k: int) -> list[Hit]:
    """Verify coarse hits against the query's local features; rank them by inliers
    (ties keep the coarse order); the top k, with their inliers and transforms."""
    local = col.recipe.local
    assert local is not None
    hit_ids = [_tiles_of(col, h) for h in hits]
    # every hit's tiles read (and their descriptors decoded) at once
    wanted = np.unique(np.concatenate(hit_ids)) if hit_ids else np.zeros(0, np.int64)
    fetched = col.bundle.meta.locals_of(wanted)
    scored = []
    for h, ids in zip(hits, hit_ids, strict=True):
        per_px = _level0_per_px(col, h.slide_id, h.magnification)
        v, affine = verify_tiles(features, col.bundle.meta, ids, per_px, local, fetched)
        scored.append((h, v, affine))
    scored.sort(key=lambda s: -s[1].inliers)  # stable: coarse order among equals
    return [
        h.model_copy(
            update={
                "rank": rank,
                "inliers": v.inliers,
                "matches": v.matches,
                "similarity": INLIERS(v.inliers),
                "affine": None if a is None else np.round(a, 6).tolist(),
            }
        )
        for rank, (h, v, a) in enumerate(scored[:k], 1)
    ]


def local_search(
    col: Collection,
    select: ScaleSelect,
    image: np.ndarray,
    name: str,
    k: int,
    scale: str,
    start: float,
    slide_ids: set[int] | None = None,
) -> SearchResult:
    """Local-feature votes -> RANSAC per (slide, magnification) -> rank by inliers.
    Each hit is the query's footprint mapped into the slide by the fitted transform."""
    local = col.recipe.local
    assert local is not None and col.bundle.local is not None
    assert col.bundle.local_index is not None
    t = col.recipe.tiling.tile_size
    h_px, w_px = image.shape[:2]
    allowed = select(scale)
    features = col.bundle.local.query(image)
    groups = vote_and_verify(
        features,
        col.bundle.local_index,
        col.bundle.meta,
        local,
        {sid: r.info.base_magnification for sid, r in col.slides.items()},
        allowed,
        slide_ids=slide_ids,
    )
    hits: list[Hit] = []
    for g in groups:
        if g.inliers < local.min_inliers or g.affine_level0 is None:
            continue
        hits.append(footprint_hit(col, len(hits) + 1, g, w_px, h_px))
        if len(hits) == k:
            break
    return SearchResult(
        query=name,
        query_rows=max(1, h_px // t),
        query_cols=max(1, w_px // t),
        magnifications=col.magnifications,
        scale=scale,
        searched_magnifications=sorted(allowed) if allowed else col.magnifications,
        verified=True,
        query_features=len(features),
        hits=hits,
        seconds=round(time.perf_counter() - start, 6),
        distance_kind="inliers",
    )


def footprint_hit(col: Collection, rank: int, g: VerifiedGroup, w_px: int, h_px: int) -> Hit:
    """A hit covering the query's corners mapped by the group's transform (level-0
    bounding box, clipped to the slide)."""
    assert g.affine_level0 is not None
    slide = col.slides[g.slide_id].info
    corners = np.array([[0, 0, 1], [w_px, 0, 1], [0, h_px, 1], [w_px, h_px, 1]], float)
    mapped = corners @ g.affine_level0.T
    x0, y0 = np.clip(mapped.min(axis=0), 0, [slide.width, slide.height])
    x1, y1 = np.clip(mapped.max(axis=0), 0, [slide.width, slide.height])
    geometry = col.grids.get(g.slide_id, g.magnification).geometry
    step, per_tile = geometry.step, geometry.per_tile
    row, column = int(y0 // step), int(x0 // step)
    rect = (
        int(round(x0)),
        int(round(y0)),
        max(1, int(round(x1 - x0))),
        max(1, int(round(y1 - y0))),
    )
    # tiles, not cells: with a stride a tile spans per_tile cells
    shape = (
        max(1, -(-(int(np.ceil(y1 / step)) - row) // per_tile)),
        max(1, -(-(int(np.ceil(x1 / step)) - column) // per_tile)),
    )
    return col.hit(
        rank,
        g.slide_id,
        g.magnification,
        rect,
        (row, column),
        shape,
        -float(g.inliers),
        INLIERS(g.inliers),
        inliers=g.inliers,
        matches=g.verification.matches,
        affine=np.round(g.affine_level0, 6).tolist(),
    )
