"""Typed search results."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, PlainSerializer


def shortest(value: float) -> float:
    """A magnification as stored (float32-exact: cbir.recipes) -> the shortest decimal
    with its bits, as JSON shows it: 13.3, not 13.300000190734863."""
    return float(str(np.float32(value)))


#: A magnification: float32-exact in Python (it equals its stored keys), shortest in JSON.
Magnification = Annotated[float, PlainSerializer(shortest, return_type=float, when_used="json")]


class Hit(BaseModel):
    """One ranked result: a tile or a region of an indexed slide.

    x, y, w, h are level-0 pixels of the slide, so the hit can be cut with
    `cbir.open_slide(slide_path).read_region(x, y, w, h, magnification)`: the query's own
    extent placed where it matched, to a fraction of a grid cell (cbir.search.placement;
    within the slide), so it reads back about the query's size at its magnification.
    row, col, rows, cols name the grid cells its whole tiles matched.
    """

    rank: int  # 1-based
    slide: str  # file name
    slide_path: str
    slide_id: int
    magnification: Magnification
    x: int
    y: int
    w: int
    h: int
    row: int  # grid cell of the top-left matched tile at this magnification
    col: int
    rows: int  # whole query tiles matched (1 x 1 for a tile query)
    cols: int
    distance: float  # Hamming for a tile; D = d_near(Q, B') + d_near(B', Q) for a region;
    # the coarse distance for hits verified from a global search; -inliers for hits found by
    # local-feature votes (smaller is better in every case)
    #: In [0, 1], 1 = identical; comparable across queries of one bundle (see
    #: cbir.search.similarity for how each kind of distance maps to it).
    similarity: float | None = None
    tile_id: int | None = None
    #: Local-feature verification (--verify): RANSAC inliers, tentative matches, and the
    #: affine transform (2 x 3) mapping query pixels (x, y) to level-0 slide pixels.
    inliers: int | None = None
    matches: int | None = None
    affine: list[list[float]] | None = None
    #: The slide's labels (`cbir label`), e.g. {"diagnosis": "LUAD"}.
    labels: dict[str, str] = {}
    #: With --orientations: the flip or turn applied to the query before it matched here
    #: (cbir.search.orientation); "none" otherwise.
    orientation: str = "none"


class Vote(BaseModel):
    """Majority vote of the top-k hits' values of one slide label (mMV@k): the value most
    hits carry; a tie goes to the value whose best hit ranks higher."""

    key: str
    value: str | None  # None: no hit carries the label
    count: int  # hits with that value
    hits: int  # hits that voted (carry the label)
    of: int  # hits in the result (k, or fewer when fewer were found)
    counts: dict[str, int]  # hits per value, most first


class SearchResult(BaseModel):
    """Hits of one query, with what the query was."""

    query: str
    query_rows: int
    query_cols: int
    #: The query was shorter than a tile on one side and was resized up by this factor
    #: (cbir.search.query.fit_to_tile); None: searched as given.
    query_resized: float | None = None
    #: A region query at a magnification not indexed in the bundle was read at this one,
    #: the nearest indexed (Index.nearest_indexed); None: read at its own.
    query_read_at: Magnification | None = None
    magnifications: list[Magnification]  # indexed in the bundle
    scale: str = "all"  # "all" or one magnification ("20x")
    searched_magnifications: list[Magnification] = []
    verified: bool = False  # ranked by local-feature RANSAC inliers
    query_features: int | None = None  # local features of the query (--verify)
    hits: list[Hit]
    seconds: float
    k: int | None = None  # hits asked for
    min_similarity: float | None = None
    below_min_similarity: int = 0  # hits dropped by min_similarity
    #: What Hit.distance counts: "hamming" (bits), "unit_l2" / "l2" (squared L2 between
    #: unit / other vectors), "inliers" (distance = -inliers); a region's is D (both ways).
    distance_kind: str | None = None
    #: Tiles at the searched magnifications of the searched slides (set with fewer than k
    #: hits, to say why).
    searched_tiles: int | None = None
    slides: list[str] | None = None  # names of the slides searched (None: every slide)
    exclude_query_slide: bool = False  # hits on a region query's own slide were dropped
    vote: Vote | None = None  # majority vote of a label over the hits (--vote KEY)


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two level-0 rectangles (anything with x, y, w, h: a
    Hit, a Region)."""
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.w * a.h + b.w * b.h - inter)


def majority_vote(hits: Sequence[Hit], key: str) -> Vote:
    """The value of label `key` most of `hits` carry (mMV@k over the hits given); a tie
    goes to the value whose best hit ranks higher. Hits without the label do not vote."""
    values = [h.labels[key] for h in hits if key in h.labels]
    counts = Counter(values)
    first = {v: i for i, v in reversed(list(enumerate(values)))}
    order = sorted(counts, key=lambda v: (-counts[v], first[v]))
    return Vote(
        key=key,
        value=order[0] if order else None,
        count=counts[order[0]] if order else 0,
        hits=len(values),
        of=len(hits),
        counts={v: counts[v] for v in order},
    )
