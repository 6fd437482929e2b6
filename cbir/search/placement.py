"""Hits at the query's own extent. A search matches the query's tile grid to grid cells of
a slide; the hit is then the whole query rectangle placed there, at sub-cell precision:
the distances of the query to the cells one step either side of the match, fitted with a
V (equiangular line fit, the usual sub-pixel fit of block matching), say how far between
cells the query lies. Only grids of overlapping tiles (a recipe `stride` below the tile)
are refined: there a neighbour shares part of the matched tile's pixels."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from cbir.search.collection import Collection
from cbir.search.hits import Hit, iou
from cbir.search.query import centred_box
from cbir.search.region import region_distance, sub_grids
from cbir.storage.metadata import CodeGrid

#: A match this much closer than its neighbours (relative distance) is exact.
EXACT = 1e-4
#: A sub-cell offset is at most this many cells (a better neighbour than the match
#: moves the hit towards it, never past it).
MAX_SHIFT = 1.0


@dataclass(frozen=True)
class QueryFrame:
    """Where a query's tile grid lies in it, in query px (after any resize): the first
    tile's top-left corner `offset` (x, y) and the query's `size` (w, h)."""

    offset: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def of(cls, image: np.ndarray, tile_size: int) -> QueryFrame:
        """The frame of (h, w, 3) `image` cut by cbir.search.query.query_tiles (its whole
        tiles centred in it)."""
        h, w = image.shape[:2]
        x, y, _, _ = centred_box(h, w, tile_size)
        return cls(offset=(x, y), size=(w, h))


def shift_distances(
    col: Collection, grid: CodeGrid, codes: np.ndarray, row: int, col_: int
) -> np.ndarray:
    """D (as the region search scores it) of query codes (m, n, e) at cells (row + dr,
    col_ + dc) for dr, dc in (-1, 0, 1) -> (3, 3) float64; inf where the shifted grid
    leaves the slide or holds no indexed cell."""
    m, n, e = codes.shape
    f = col.per_tile
    g = grid.geometry
    out = np.full((3, 3), np.inf)
    shifts = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    r0 = np.array([row + dr for dr, _ in shifts])
    c0 = np.array([col_ + dc for _, dc in shifts])
    inside = (r0 >= 0) & (c0 >= 0) & (r0 + f * (m - 1) < g.rows) & (c0 + f * (n - 1) < g.cols)
    if not inside.any():
        return out
    origins = np.stack([r0[inside], c0[inside]], axis=1)
    cand, valid = sub_grids(grid, origins, m, n, f, col.bundle.pipeline.codes_from_bytes)
    d = region_distance(codes.reshape(m * n, e), cand, valid, col.pairwise)
    d[~valid.any(axis=1)] = np.inf
    flat = out.reshape(-1)
    flat[np.flatnonzero(inside)] = d
    return out


def subcell(before: float, at: float, after: float) -> float:
    """Offset in cells in [-MAX_SHIFT, MAX_SHIFT] of the minimum of a V through the
    distances at -1, 0 and +1 cells (0 when a side is missing, all are equal, or the match
    is exact: a distance of 0, to float precision, means the query's pixels are the
    cell's)."""
    if not (np.isfinite(before) and np.isfinite(after) and np.isfinite(at)):
        return 0.0
    if at <= EXACT * max(before, after):
        return 0.0
    rise = max(before, after) - at
    if rise <= 0:
        return 0.0
    return float(np.clip((before - after) / (2 * rise), -MAX_SHIFT, MAX_SHIFT))


def place_hits(
    col: Collection, hits: list[Hit], codes: np.ndarray, frame: QueryFrame, refine: bool = True
) -> list[Hit]:
    """Grid-cell hits of query codes (m, n, e) -> the same hits with x, y, w, h the query's
    rectangle (level-0 px, within the slide) at its sub-cell place (at its cell without
    `refine`); row, col, rows, cols still name the matched cells. Hits without a code grid
    keep their rectangle."""
    placed = []
    for h in hits:
        grid = col.grids.get(h.slide_id, h.magnification)
        if grid is None:
            placed.append(h)
            continue
        g = grid.geometry
        dr = dc = 0.0
        if refine and g.per_tile > 1:  # without overlap a neighbour shares no pixels: no V to fit
            d = shift_distances(col, grid, codes, h.row, h.col)
            dr = subcell(d[0, 1], d[1, 1], d[2, 1])
            dc = subcell(d[1, 0], d[1, 1], d[1, 2])
        per_px = g.level0_per_px
        info = col.slides[h.slide_id].info
        w = min(round(frame.size[0] * per_px), info.width)
        hh = min(round(frame.size[1] * per_px), info.height)
        x = round((h.col + dc) * g.step - frame.offset[0] * per_px)
        y = round((h.row + dr) * g.step - frame.offset[1] * per_px)
        x = min(max(0, x), info.width - w)
        y = min(max(0, y), info.height - hh)
        placed.append(h.model_copy(update={"x": x, "y": y, "w": w, "h": hh}))
    return placed


#: Two hits of one slide and magnification overlapping by at least this IoU are one place.
SAME_PLACE_IOU = 0.5


def same_place(a: Hit, b: Hit) -> bool:
    """One slide, one magnification, IoU >= SAME_PLACE_IOU."""
    return (
        a.slide_id == b.slide_id
        and a.magnification == b.magnification
        and iou(a, b) >= SAME_PLACE_IOU
    )


def distinct_places(
    hits: Iterable[Hit], k: int, prepare: Callable[[Hit], Hit] | None = None
) -> list[Hit]:
    """The first k of ranked `hits` that are distinct places: a hit at the same place as
    a kept one (`same_place`) is dropped (overlapping grid cells match one query several
    times); ranks renumbered 1..k. `prepare` turns each hit into the one compared and
    kept, as they are reached (only as many as it takes)."""
    kept: list[Hit] = []
    for hit in hits:
        hit = prepare(hit) if prepare is not None else hit
        if any(same_place(o, hit) for o in kept):
            continue
        kept.append(hit)
        if len(kept) == k:
            break
    return [h.model_copy(update={"rank": i}) for i, h in enumerate(kept, 1)]


def placed_places(
    col: Collection, hits: list[Hit], codes: np.ndarray, frame: QueryFrame, k: int
) -> list[Hit]:
    """Ranked grid-cell hits -> the first k distinct places, each refined (`place_hits`).
    Distinct cells can become one place once refined (two cells a stride apart both move
    onto the query's true place), so each is refined before it is compared with the kept
    ones, and only as many as it takes are refined."""
    coarse = distinct_places(place_hits(col, hits, codes, frame, refine=False), len(hits))
    return distinct_places(coarse, k, lambda h: place_hits(col, [h], codes, frame)[0])
