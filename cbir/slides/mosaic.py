"""A slide's mosaic (Yottixel, SISH): a few of its tissue tiles that stand for the whole
slide in a slide query. The tiles are clustered by colour (k-means on each tile's mean
and spread of RGB in the low-resolution thumbnail), then each colour cluster by place
(k-means on the tile centres), keeping the tile nearest each spatial centre: every
stain and every part of the tissue is represented, about `fraction` of the tiles, at
most `max_tiles`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cbir.slides.tiling import GridGeometry

#: Colour clusters (Yottixel's k).
COLOUR_CLUSTERS = 9
#: Share of a slide's tiles kept (Yottixel and SISH keep 5-10 %).
MOSAIC_FRACTION = 0.05
#: Most tiles in a mosaic: a slide query searches this many tiles at most.
MAX_MOSAIC_TILES = 100
#: Fewest tiles in a mosaic (all of a slide's tiles when it has fewer): 5% of a small
#: slide or a biopsy would be one or two tiles, too few for a median.
MIN_MOSAIC_TILES = 16
#: Mosaics are taken at this magnification (Yottixel's and SISH's), so that slides
#: scanned at 20x and at 40x compare at the same scale.
MOSAIC_MAGNIFICATION = 20.0


def mosaic_magnification(magnifications: list[float]) -> float:
    """Of a slide's magnifications with tissue tiles, the one its mosaic is taken at: the
    highest up to MOSAIC_MAGNIFICATION, else the lowest above it."""
    below = [m for m in magnifications if m <= MOSAIC_MAGNIFICATION * (1 + 1e-6)]
    return max(below) if below else min(magnifications)


@dataclass(frozen=True)
class MosaicSpec:
    clusters: int = COLOUR_CLUSTERS
    fraction: float = MOSAIC_FRACTION
    max_tiles: int = MAX_MOSAIC_TILES
    min_tiles: int = MIN_MOSAIC_TILES


class ThumbnailColours:
    """Mean and standard deviation of R, G, B over any level-0 rectangle, from a
    thumbnail (integral images of the values and their squares)."""

    def __init__(self, thumb: np.ndarray, level0_size: tuple[int, int]) -> None:
        """thumb: (h, w, 3) uint8 of a slide of level0_size (width, height) px."""
        self.shape = thumb.shape[:2]
        self.fx = level0_size[0] / thumb.shape[1]
        self.fy = level0_size[1] / thumb.shape[0]
        x = thumb.astype(np.float64)
        self.sums = cv2.integral(x, sdepth=cv2.CV_64F)  # (h + 1, w + 1, 3)
        self.squares = cv2.integral(x * x, sdepth=cv2.CV_64F)

    def of(self, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
        """(n,) level-0 origins of squares of `size` px -> (n, 6) float32: mean R, G, B
        and their standard deviations, 0-255."""
        hh, ww = self.shape
        x0 = np.clip(np.floor(x / self.fx), 0, ww - 1).astype(np.int64)
        y0 = np.clip(np.floor(y / self.fy), 0, hh - 1).astype(np.int64)
        x1 = np.clip(np.ceil((x + size) / self.fx), x0 + 1, ww).astype(np.int64)
        y1 = np.clip(np.ceil((y + size) / self.fy), y0 + 1, hh).astype(np.int64)
        area = ((x1 - x0) * (y1 - y0)).astype(np.float64)[:, None]

        def box(s: np.ndarray) -> np.ndarray:
            return (s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]) / area

        mean = box(self.sums)
        std = np.sqrt(np.maximum(box(self.squares) - mean * mean, 0.0))
        return np.concatenate([mean, std], axis=1).astype(np.float32)


#: k-means learns its centres on at most this many points, then labels them all.
FIT_POINTS = 4096


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels (n,) of (n, f) points into at most k clusters (fewer when fewer
    distinct points): OpenCV's k-means++ (its random generator is per thread, seeded
    here), centres fitted on a seeded sample of FIT_POINTS."""
    k = min(k, len(np.unique(points, axis=0)))
    if k <= 1:
        return np.zeros(len(points), np.int64)
    x = np.ascontiguousarray(points, np.float32)
    fit = x
    if len(x) > FIT_POINTS:
        fit = x[np.random.default_rng(seed).choice(len(x), FIT_POINTS, replace=False)]
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    _, _, centres = cv2.kmeans(fit, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    # squared distances up to the per-point constant |x|^2: one (n, k) matrix product
    d = (centres * centres).sum(axis=1)[None, :] - 2.0 * (x @ centres.T)
    return d.argmin(axis=1).astype(np.int64)


def choose_mosaic(
    centres: np.ndarray, colours: np.ndarray | None, spec: MosaicSpec = MosaicSpec(), seed: int = 0
) -> np.ndarray:
    """The mosaic of a slide's n tiles: centres (n, 2) level-0 px, colours (n, f) (None:
    by place only) -> sorted (m,) int64 indices of the kept tiles, 1 <= m <= max_tiles
    (about fraction * n, at least min(n, min_tiles)). Deterministic for a seed."""
    n = len(centres)
    if n == 0:
        return np.zeros(0, np.int64)
    if colours is None:
        labels = np.zeros(n, np.int64)
    else:
        z = (colours - colours.mean(axis=0)) / (colours.std(axis=0) + 1e-6)
        labels = _kmeans(z, spec.clusters, seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    # each colour cluster keeps its share of the mosaic, at least one tile
    want = min(spec.max_tiles, n, max(len(groups), spec.min_tiles, round(spec.fraction * n)))
    shares = _shares([len(g) for g in groups], want)
    kept = []
    for group, share in zip(groups, shares, strict=True):
        pts = centres[group].astype(np.float64)
        places = _kmeans(pts, share, seed)
        for p in np.unique(places):
            members = group[places == p]
            centre = centres[members].mean(axis=0)
            nearest = np.argmin(((centres[members] - centre) ** 2).sum(axis=1))
            kept.append(int(members[nearest]))
    return np.array(sorted(_top_up(centres, set(kept), want)), np.int64)


def _shares(sizes: list[int], want: int) -> list[int]:
    """Tiles per cluster of `sizes` tiles summing to `want` (<= their total): each at
    least 1 and at most its size, the rest by largest remainder of its share."""
    n = sum(sizes)
    exact = [want * s / n for s in sizes]
    shares = [min(s, max(1, int(e))) for s, e in zip(sizes, exact, strict=True)]
    order = np.argsort([-(e - int(e)) for e in exact], kind="stable")
    while sum(shares) > want:  # more clusters than tiles wanted: the largest give one back
        shares[int(np.argmax(shares))] -= 1
    while sum(shares) < want:
        for i in order:
            if sum(shares) < want and shares[i] < sizes[i]:
                shares[i] += 1
    return shares


def _top_up(centres: np.ndarray, kept: set[int], want: int) -> set[int]:
    """`kept` grown to `want` tiles (k-means gives fewer places than asked when tiles
    coincide): each added tile the one farthest from those kept."""
    if len(kept) >= want:
        return kept
    kept = set(kept)
    chosen = centres[sorted(kept)].astype(np.float64)
    gap = ((centres[:, None, :] - chosen[None]) ** 2).sum(-1).min(axis=1)
    while len(kept) < want:
        gap[list(kept)] = -1.0
        i = int(np.argmax(gap))
        kept.add(i)
        gap = np.minimum(gap, ((centres - centres[i]) ** 2).sum(axis=1))
    return kept


@dataclass(frozen=True)
class SlideMosaic:
    """A slide's mosaic: `cells` (m,) int64 index the tissue cells of its grid at
    `magnification`, counted row-major (the order of the grid's tile ids)."""

    magnification: float
    cells: np.ndarray


def grid_mosaic(
    geometry: GridGeometry,
    keep: np.ndarray,
    colours: ThumbnailColours | None,
    spec: MosaicSpec = MosaicSpec(),
) -> SlideMosaic:
    """The mosaic of one grid's kept (rows, cols) bool cells; `colours` None: by place."""
    rr, cc = np.nonzero(keep)
    x, y = geometry.origin(rr, cc)
    half = geometry.size / 2
    centres = np.stack([x + half, y + half], axis=1).astype(np.float64)
    feats = colours.of(x, y, geometry.size) if colours is not None else None
    return SlideMosaic(geometry.magnification, choose_mosaic(centres, feats, spec))


def slide_mosaic(
    grids: list[GridGeometry], keeps: list[np.ndarray], colours: ThumbnailColours | None
) -> SlideMosaic | None:
    """The mosaic at its `mosaic_magnification` (None: no grid has a tissue cell)."""
    filled = {g.magnification: (g, k) for g, k in zip(grids, keeps, strict=True) if k.any()}
    if not filled:
        return None
    g, k = filled[mosaic_magnification(list(filled))]
    return grid_mosaic(g, k, colours)
