"""Slides ranked for a slide query (Yottixel, SISH): a coarse stage orders the slides by
the cosine of their mean-pooled code vectors; the first `candidates` are then ranked by
the median over the query's mosaic tiles of the distance to the slide's nearest tile at
the mosaic's magnification (median-of-minimum), computed exactly with a Faiss flat
search over that slide's stored codes. Each ranked slide keeps its tile pairs."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from cbir.search.collection import Collection
from cbir.search.slide_hits import SlideHit, TilePair
from cbir.search.tiles import stored_codes
from cbir.slides.mosaic import mosaic_magnification
from cbir.storage.mosaics import StoredMosaic, mosaic_from_grid, read_mosaic

#: Slides the coarse stage hands to median-of-minimum.
SLIDE_CANDIDATES = 100
#: How slides are ranked after the coarse stage: median-of-minimum to every tile of the
#: slide ("median") or to its mosaic's tiles ("mosaic", Yottixel's); or the coarse only.
METHODS = ("median", "mosaic", "pooled")
#: What `cbir search --slide` ranks by: the best of the three on the slide set cut from
#: the shared slides (tools/eval_slides.py: mAP@5 0.718 against 0.593 median and 0.610
#: mosaic on stats-lsh32; 1.0 against 0.963 median on effnet-lsh64; all 1.0 on
#: effnet-flat).
DEFAULT_METHOD = "pooled"

Rect = tuple[int, int, int, int]


@dataclass
class QueryMosaic:
    """A slide query ready to rank: its mosaic's codes (m, e) at `magnification` (packed
    bits, or float vectors), their level-0 rectangles on the query slide, its pooled
    (d,) unit vector, and the indexed slide it is (None: a file not in the bundle)."""

    name: str
    magnification: float
    codes: np.ndarray
    rects: list[Rect]
    pooled: np.ndarray
    slide_id: int | None = None


def stored_mosaic(col: Collection, slide_id: int) -> StoredMosaic | None:
    """A slide's mosaic: stored, or made by place from its grid at its mosaic
    magnification (a bundle written before mosaics); cached in the collection. None: the
    slide has no tile."""
    if slide_id in col.mosaics:
        return col.mosaics[slide_id]
    store = col.bundle.meta.store_of(slide_id)
    found = read_mosaic(store, slide_id) if store is not None else None
    if found is None:
        grids = [col.grids.get(slide_id, m) for m in col.slides[slide_id].magnifications]
        filled = {g.geometry.magnification: g for g in grids if g is not None and g.valid.any()}
        if filled:
            pipe = col.bundle.pipeline
            grid = filled[mosaic_magnification(list(filled))]
            found = mosaic_from_grid(grid, pipe.codes_from_bytes, pipe.binary)
    col.mosaics[slide_id] = found
    return found


def slide_codes(col: Collection, slide_id: int, magnification: float) -> tuple:
    """A slide's tiles at `magnification`: codes (n, e) as compared, tile ids (n,), and
    the grid (None when the slide has no tile there)."""
    grid = col.grids.get(slide_id, magnification)
    if grid is None or not grid.valid.any():
        return None, None, None
    valid = grid.valid
    return col.bundle.pipeline.codes_from_bytes(grid.codes[valid]), grid.ids[valid], grid


def mosaic_codes(col: Collection, mosaic: StoredMosaic) -> tuple:
    """A slide's mosaic tiles: codes (m, e) as compared and tile ids (m,), read tile by
    tile (not the whole grid)."""
    return stored_codes(col, mosaic.tile_ids), mosaic.tile_ids


def nearest(query: np.ndarray, base: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each of (m, e) query codes, its nearest of (n, e) base codes: distances (m,)
    float64 (Hamming bits, or squared L2) and row numbers (m,) int64 (Faiss flat)."""
    if binary:
        index = faiss.IndexBinaryFlat(base.shape[1] * 8)
        index.add(np.ascontiguousarray(base))
        D, I = index.search(np.ascontiguousarray(query), 1)
    else:
        D, I = faiss.knn(
            np.ascontiguousarray(query, np.float32), np.ascontiguousarray(base, np.float32), 1
        )
    return D[:, 0].astype(np.float64), I[:, 0].astype(np.int64)


def _pairs(col: Collection, q: QueryMosaic, D: np.ndarray, ids: np.ndarray) -> list[TilePair]:
    records = col.bundle.meta.tiles_of(ids)
    pairs = [
        TilePair(query=rect, hit=(r.x, r.y, r.w, r.h), distance=float(d))
        for rect, r, d in zip(q.rects, records, D.tolist(), strict=True)
        if r is not None
    ]
    return sorted(pairs, key=lambda p: p.distance)


def rank_slides(
    col: Collection,
    q: QueryMosaic,
    k: int,
    keep: set[int] | None,
    method: str = DEFAULT_METHOD,
    candidates: int = SLIDE_CANDIDATES,
) -> tuple[list[SlideHit], int, int]:
    """The top-k slides of `keep` (None: every slide) for query mosaic `q`; also how
    many were ranked by median-of-minimum and how many had no tile at its magnification."""
    ids = sorted(col.slides if keep is None else keep)
    comparable = [s for s in ids if q.magnification in col.slides[s].magnifications]
    mosaics = {s: stored_mosaic(col, s) for s in comparable}
    comparable = [s for s in comparable if mosaics[s] is not None]
    if not comparable:
        return [], 0, len(ids)
    pooled = np.stack([mosaics[s].pooled for s in comparable])  # type: ignore[union-attr]
    cosine = pooled.astype(np.float64) @ q.pooled.astype(np.float64)
    order = sorted(range(len(comparable)), key=lambda i: (-cosine[i], comparable[i]))
    binary = col.bundle.pipeline.binary
    scored = []  # (distance, -cosine, slide id, pairs)
    fine = order[: max(candidates, k)] if method != "pooled" else order[:k]
    for i in fine:
        sid = comparable[i]
        if method == "mosaic":
            codes, tile_ids = mosaic_codes(col, mosaics[sid])  # type: ignore[arg-type]
        else:
            codes, tile_ids, _ = slide_codes(col, sid, q.magnification)
        D, rows = nearest(q.codes, codes, binary)
        distance = float(np.median(D)) if method != "pooled" else 1.0 - float(cosine[i])
        distance += 0.0  # no -0.0
        scored.append((distance, -float(cosine[i]), sid, _pairs(col, q, D, tile_ids[rows])))
    scored.sort(key=lambda s: s[:3])
    hits = []
    for rank, (distance, neg_cos, sid, pairs) in enumerate(scored[:k], 1):
        info = col.slides[sid].info
        sim = (
            col.code_similarity(distance)
            if method != "pooled"
            else round(min(1.0, max(0.0, 1.0 - distance / 2)), 6)  # (1 + cosine) / 2
        )
        hits.append(
            SlideHit(
                rank=rank,
                slide=info.name,
                slide_path=info.path,
                slide_id=sid,
                magnification=q.magnification,
                distance=round(distance, 6),
                similarity=sim,
                pooled_similarity=round(-neg_cos, 6),
                pairs=pairs,
            )
        )
    return hits, len(fine) if method != "pooled" else 0, len(ids) - len(comparable)
