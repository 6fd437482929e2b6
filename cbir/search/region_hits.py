"""Region queries: the top k non-overlapping m x n sub-grids of every slide by seed 000's
D = d_near(Q, B') + d_near(B', Q), with magnification / slide filters."""

from __future__ import annotations

import numpy as np

from cbir.search.collection import Collection
from cbir.search.hits import Hit
from cbir.search.region import region_candidates, suppress_overlaps


def region_hits(
    col: Collection,
    codes: np.ndarray,
    k: int,
    allowed: set[float] | None = None,
    slide_ids: set[int] | None = None,
) -> list[Hit]:
    """Top-k regions for query codes (m, n, e). With `slide_ids`, candidates on other
    slides are dropped and the query tiles' seeds widen (x4) until k regions remain or
    every tile seeds."""
    m, n = codes.shape[:2]
    cfg = col.recipe.search
    pipeline, index = col.bundle.pipeline, col.bundle.index
    seeds, max_seeds = cfg.region_seeds, cfg.region_max_seeds
    while True:
        cands = region_candidates(
            codes,
            index,
            col.bundle.meta,
            col.grids,
            seeds,
            cfg.region_min_valid,
            max_seeds,
            decode=pipeline.codes_from_bytes,
            pairwise=col.pairwise,
            allowed=allowed,
            per_tile=col.per_tile,
        )
        if slide_ids is not None:
            cands = [c for c in cands if c.slide_id in slide_ids]
        kept = suppress_overlaps(cands, m, n, k, col.per_tile)
        if slide_ids is None or len(kept) >= k or seeds >= index.ntotal:
            break
        seeds, max_seeds = seeds * 4, None if max_seeds is None else max_seeds * 4
    hits = []
    for rank, c in enumerate(kept, 1):
        geometry = col.grids.get(c.slide_id, c.magnification).geometry
        rect = geometry.tiles_rect(c.r0, c.c0, m, n)
        similarity = col.code_similarity(c.distance, region=True)
        hits.append(
            col.hit(
                rank,
                c.slide_id,
                c.magnification,
                rect,
                (c.r0, c.c0),
                (m, n),
                round(c.distance, 6),
                similarity,
            )
        )
    return hits
