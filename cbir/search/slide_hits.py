"""Typed results of a slide query: ranked slides, each with the tile pairs that explain
its rank (a query mosaic tile and the candidate slide's nearest tile)."""

from __future__ import annotations

from pydantic import BaseModel

from cbir.search.hits import Magnification, Vote


class TilePair(BaseModel):
    """A mosaic tile of the query slide and its nearest tile on the hit's slide; both
    rectangles (x, y, w, h) in level-0 px of their own slide."""

    query: tuple[int, int, int, int]
    hit: tuple[int, int, int, int]
    distance: float  # between their codes, as the bundle's tile search measures it


class SlideHit(BaseModel):
    """One ranked slide. `distance`: 1 - cosine of the mean-pooled vectors (method
    "pooled"), or the median over the query's mosaic tiles of the distance to the slide's
    nearest tile (Yottixel's median-of-minimum: to any of its tiles for "median", to its
    mosaic's for "mosaic"); smaller is better."""

    rank: int  # 1-based
    slide: str  # file name
    slide_path: str
    slide_id: int
    magnification: Magnification  # where the tiles were compared
    distance: float
    similarity: float  # in [0, 1], 1 = identical: as a tile hit's from `distance`, or
    # (1 + cosine) / 2 for "pooled"
    pooled_similarity: float  # cosine of the mean-pooled vectors (the coarse stage)
    labels: dict[str, str] = {}
    pairs: list[TilePair] = []  # nearest first; one per mosaic tile


class SlideSearchResult(BaseModel):
    """Slides ranked for one slide query."""

    query: str
    query_slide_id: int | None = None  # the query is this indexed slide (its stored mosaic)
    query_tiles: int  # tiles of the query's mosaic
    magnification: Magnification  # of the mosaic tiles and of every compared tile
    method: str  # "pooled", "median" or "mosaic" (cbir.search.slide_rank.METHODS)
    candidates: int  # slides ranked by median-of-minimum after the coarse stage (0: pooled)
    hits: list[SlideHit]
    seconds: float
    k: int
    distance_kind: str  # of pair distances: "hamming", "unit_l2" or "l2"
    slides: list[str] | None = None  # names of the slides searched (None: every slide)
    exclude_query_slide: bool = False  # slides were left out as the query's own
    case_label: str | None = None  # slides sharing the query's value of it were left out
    #: Slides not compared: no tile at the mosaic's magnification.
    other_magnification: int = 0
    vote: Vote | None = None
