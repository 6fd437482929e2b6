"""The Python API: open a bundle and search it. `Index` prepares the query (pixels,
tissue check, magnifications, codes) and hands it to the searchers in cbir.search, which
read the bundle through a `Collection`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CbirError, QueryError
from cbir.info import IndexInfo, SlideEntry, bundle_info
from cbir.search.arguments import fraction, slide_names, whole
from cbir.search.collection import Collection
from cbir.search.filters import finished, slide_filter, tiles_at
from cbir.search.hits import Hit, SearchResult
from cbir.search.junk import check_looks
from cbir.search.orientation import ORIENTATIONS
from cbir.search.orientation import merge as merge_orientations
from cbir.search.placement import QueryFrame, placed_places
from cbir.search.query import (
    MAX_QUERY_PIXELS,
    Region,
    as_rgb,
    fit_to_tile,
    query_tiles,
    read_region_at,
)
from cbir.search.region_hits import region_hits
from cbir.search.scales import ScaleSelector
from cbir.search.slide_hits import SlideSearchResult
from cbir.search.slide_search import search_slide
from cbir.search.tiles import RERANK_TIE_WIDEN, reranks, tile_hits
from cbir.search.verified import local_search, verify_hits
from cbir.slides.open import decode_image
from cbir.storage.bundle import Bundle
from cbir.storage.metadata import SlideRecord

__all__ = [
    "RERANK_TIE_WIDEN",
    "Index",
    "IndexInfo",
    "Query",
    "SlideEntry",
    "as_region",
    "open_index",
]

Query = np.ndarray | str | os.PathLike[str] | Region

#: A query's tiles are described at most this many a network batch: effnet-flat's peak
#: for a 400-tile query is 0.81 GB at 16, 1.09 GB at the recipe's 32 (tools/
#: bench_query_memory.py).
QUERY_BATCH = 16


class Index:
    """An opened bundle. `search` takes an image array, an image file, a `Region` or a
    region string `slide.svs:x,y,w,h@20x`."""

    def __init__(self, bundle: Bundle, device: str | None = "auto") -> None:
        self.bundle = bundle
        self.closed = False
        bundle.pipeline.cap_batch(QUERY_BATCH)  # a 400-tile query stays under 1 GB
        self.device = device
        self.recipe = bundle.recipe
        self.collection = col = Collection.of(bundle)
        self.slides = col.slides
        self.grids = col.grids
        #: Grid cells per tile side (tile / stride; 1 without overlapping tiles).
        self.per_tile = col.per_tile
        self.code_similarity, self.vector_similarity = col.code_similarity, col.vector_similarity
        self._by_path = {r.info.path: r for r in self.slides.values()}
        self.scale_selector = ScaleSelector(col, device)
        #: A query needs one tile with this much tissue (the loosest threshold indexed).
        self.min_tissue = min(
            (r.min_tissue_fraction for r in self.slides.values()),
            default=self.recipe.tiling.min_tissue_fraction,
        )

    def close(self) -> None:
        self.closed = True
        self.bundle.close()

    def _check_open(self) -> None:
        if self.closed:
            raise CbirError(f"{self.bundle.root}: this Index is closed (open_index it again)")

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- query preparation ------------------------------------------------------------
    def query_image(self, query: Query) -> tuple[np.ndarray, str]:
        """Resolve a query to its (h, w, 3) uint8 pixels and a display name."""
        pixels, name, _ = self.query_pixels(query)
        return pixels, name

    def query_pixels(self, query: Query) -> tuple[np.ndarray, str, float | None]:
        """query_image, and the magnification a region was read at (None: an image): the
        nearest indexed to its own (`nearest_indexed`)."""
        if isinstance(query, np.ndarray):
            return as_rgb(query, "<array>"), "<array>", None
        query = as_region(query) or query
        if isinstance(query, Region):
            resolved = self.resolve_region(query)
            stored = self._by_path.get(resolved.slide)
            base = stored.info.base_magnification if stored else None
            pixels, read_at = read_region_at(resolved, base, self.nearest_indexed)
            shown = query.model_copy(update={"magnification": resolved.magnification})
            return pixels, str(shown), read_at
        path = Path(query)
        return decode_image(path, MAX_QUERY_PIXELS), str(path), None

    def resolve_region(self, region: Region) -> Region:
        """`region` with its slide as a file path (an indexed slide's stored path when it
        is one: named by path or by its unique file name) and its magnification when
        unset: the highest indexed one of that slide at which it covers a whole tile."""
        from cbir.storage.slide_names import lookup_slide

        records = list(self.slides.values())
        record = lookup_slide(records, region.slide, self.bundle.root, error=QueryError, files=True)
        slide = record.info.path if record is not None else str(Path(region.slide))
        mag = region.magnification
        if mag is None:
            if record is None:
                raise QueryError(
                    f"{region}: {slide} is not indexed here; give its magnification (@20x)"
                )
            mag = self.region_magnification(record, region.w, region.h)
        return region.model_copy(update={"slide": slide, "magnification": mag})

    def region_magnification(self, record: SlideRecord, w: int, h: int) -> float:
        """The highest magnification indexed for `record` at which a region of w x h
        level-0 px covers a whole tile (QueryError when none does)."""
        tile = self.recipe.tiling.tile_size
        base = record.info.base_magnification
        fits = [m for m in record.magnifications if min(w, h) * m / base >= tile]
        if not fits:
            raise QueryError(
                f"region {w} x {h} px is smaller than one {tile} px tile at every magnification "
                f"indexed for {record.info.name}"
            )
        return max(fits)

    def nearest_indexed(self, magnification: float, base: float) -> float:
        """The indexed magnification nearest `magnification` (a tie: the higher) that a
        slide of `base` has, so that a region is read at a scale its hits can be at;
        `magnification` itself when indexed, when none is at or below `base`, or when it
        lies outside [half the lowest indexed, base]."""
        mags = [m for m in self.magnifications if m <= base * (1 + 1e-6)]
        if not mags or magnification in mags or not mags[0] / 2 <= magnification <= base:
            return magnification  # outside the indexed range: as asked (or refused)
        return min(mags, key=lambda m: (abs(m - magnification), -m))

    def query_codes(self, image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(h, w, 3) uint8 -> descriptors (m, n, d) float32 and codes (m, n, e) of its tile
        grid (e = bits / 8 uint8 for binary recipes, dim float32 for float ones)."""
        return self.tile_codes(query_tiles(image, self.recipe.tiling.tile_size, name))

    def scale_probabilities(self, query: Query) -> dict[str, float] | None:
        """Seed 000's scale comparator on a query: P(same magnification) against each
        indexed magnification ({"20x": p}); None when the comparator did not learn.
        Refused (QueryError) for a bundle built without `--scale-weights`."""
        pixels, name, _ = self.query_pixels(query)
        t = self.recipe.tiling.tile_size
        return self.scale_selector.of_tiles(query_tiles(fit_to_tile(pixels, t, name)[0], t, name))

    def tile_codes(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, n, t, t, 3) uint8 tiles -> descriptors (m, n, d), codes (m, n, e)."""
        m, n, t = tiles.shape[:3]
        x = self.bundle.pipeline.describe(tiles.reshape(m * n, t, t, 3))
        codes = self.bundle.pipeline.encode(x)
        return x.reshape(m, n, -1), codes.reshape(m, n, -1)

    # -- search -----------------------------------------------------------------------
    @property
    def magnifications(self) -> list[float]:
        """Every magnification indexed in the bundle, ascending."""
        return self.collection.magnifications

    def search(
        self,
        query: Query,
        k: int | None = None,
        scale: str = "all",
        verify: bool | None = None,
        allow_background: bool = False,
        min_similarity: float | None = None,
        expand: int | None = None,
        *,
        slides: Sequence[str] | None = None,
        exclude_query_slide: bool = False,
        vote: str | None = None,
        orientations: bool = False,
    ) -> SearchResult:
        """Top-k tiles (one-tile query) or regions (larger query) over every slide.

        scale: "all" searches every indexed magnification; "20x" one of them.
        verify: rank by local-feature RANSAC inliers (None: the recipe's default). Needs a
        bundle with local features; candidates come from local-feature votes or from this
        search's own top hits, as the recipe's [local] section says.
        allow_background: search a query that is refused by default: without tissue (none
        of its tiles has the tissue fraction the bundle's tiles were indexed with), or not
        brightfield tissue (cbir.search.junk: noise, blur, pen ink, a dark or inverted
        image).
        min_similarity: drop hits whose similarity in [0, 1] is below it (fewer than k
        hits may come back; `below_min_similarity` counts the dropped ones).
        expand: query expansion of tile queries (None: the recipe's; 0: off).
        slides: search only these slides (paths or file names; an unknown one is an error).
        exclude_query_slide: drop hits on a region query's own slide (the same file, by
        path or checksum). Filters apply before the top k, so k hits come back when the
        kept slides have them.
        vote: a label key: `result.vote` is the majority vote of the hits' values (mMV@k).
        orientations: also search the query flipped and turned (8 orientations, 8x the
        describing), merged by distance; each hit says its `orientation`.
        """
        self._check_open()
        self.bundle.pipeline.descriptor  # noqa: B018  # built on first use; not timed
        start = time.perf_counter()
        col = self.collection
        k = whole(self.recipe.search.k if k is None else k, "k", 1)
        expand = whole(self.recipe.search.expand if expand is None else expand, "expand", 0)
        min_similarity = fraction(min_similarity, "min_similarity")
        slides = slide_names(slides)
        verify = self.recipe.search.verify if verify is None else verify
        local = self.recipe.local
        if verify and orientations:
            raise QueryError(
                "--orientations and --verify: RANSAC verification already "
                "matches a turned or flipped query; use one"
            )
        if verify and (local is None or self.bundle.local is None):
            raise QueryError(
                f"{self.bundle.root}: bundle has no local features for --verify (build it "
                "with --local-weights, or with recipe delf-hnsw)"
            )
        region = as_region(query)
        if region is not None:  # its slide as a path and its magnification, for the filters
            region = self.resolve_region(region)
        if exclude_query_slide and region is None:
            shown = "<array>" if isinstance(query, np.ndarray) else str(query)
            raise QueryError(
                "--exclude-query-slide needs a region query (SLIDE:x,y,w,h@MAGx); "
                f"{shown} is an image"
            )
        keep = slide_filter(col, region, slides, exclude_query_slide)
        pixels, name, read_at = self.query_pixels(query)
        t = self.recipe.tiling.tile_size

        def done(result: SearchResult) -> SearchResult:
            if resized != 1.0:
                result = result.model_copy(update={"query_resized": resized})
            if region is not None and np.float32(read_at) != np.float32(region.magnification):
                result = result.model_copy(update={"query_read_at": read_at})
            return finished(col, result, k, min_similarity, keep, exclude_query_slide, vote)

        by_votes = verify and local is not None and local.candidates_from == "votes"
        # local features need no whole tile: only tile searches resize (or refuse) a small
        # query, and that first; the looks are checked on the query as given
        image, resized = (pixels, 1.0) if by_votes else fit_to_tile(pixels, t, name)
        if not allow_background:
            check_looks(pixels, t, self.min_tissue, name)
        if by_votes:
            result = local_search(
                col, self.scale_selector.select, pixels, name, k, scale, start, keep
            )
            return done(result)
        tiles = query_tiles(image, t, name)
        allowed = self.scale_selector.select(scale)
        x, codes = self.tile_codes(tiles)
        m, n = codes.shape[:2]
        query_features = None

        def placed(turned: np.ndarray, x: np.ndarray, codes: np.ndarray, k: int) -> list[Hit]:
            # overlapping cells find one place up to per_tile^2 times: ask for that many
            wide = k * col.per_tile**2
            hits = self.search_codes(codes, wide, x, allowed, expand, slide_ids=keep)
            return placed_places(col, hits, codes, QueryFrame.of(turned, t), k)

        if orientations:
            found = {"none": placed(image, x, codes, k)}
            for turn_name, turn in list(ORIENTATIONS.items())[1:]:
                turned = turn(image)
                xt, ct = self.tile_codes(query_tiles(turned, t, name))
                found[turn_name] = placed(turned, xt, ct, k)
            hits = merge_orientations(found, k)
        elif verify:
            assert local is not None and self.bundle.local is not None
            hits = placed(image, x, codes, max(k, local.candidates))
            features = self.bundle.local.query(pixels)  # its own pixels: affine to level 0
            hits = verify_hits(col, features, hits, k)
            query_features = len(features)
        else:
            hits = placed(image, x, codes, k)
        two_step = m * n == 1 and reranks(col, x)
        return done(
            SearchResult(
                query=name,
                query_rows=m,
                query_cols=n,
                magnifications=self.magnifications,
                scale=scale,
                searched_magnifications=sorted(allowed) if allowed else self.magnifications,
                verified=verify,
                query_features=query_features,
                hits=hits,
                seconds=round(time.perf_counter() - start, 6),
                distance_kind=(col.vector_similarity if two_step else col.code_similarity).kind,
            )
        )

    def search_codes(
        self,
        codes: np.ndarray,
        k: int,
        x: np.ndarray | None = None,
        allowed: set[float] | None = None,
        expand: int = 0,
        slide_ids: set[int] | None = None,
    ) -> list[Hit]:
        """Hits for query codes (m, n, e): tile search when m = n = 1. `x` (m, n, d): the
        query descriptors, needed by the rerank step of two-step recipes; `allowed`: the
        magnifications to search (None: all); `expand`: query expansion of a tile query;
        `slide_ids`: the slides to search (None: all)."""
        m, n = codes.shape[:2]
        if m * n == 1:
            x1 = None if x is None else x.reshape(1, -1)  # see cbir.search.tiles.tile_hits
            return tile_hits(
                self.collection, codes.reshape(1, -1), k, x1, allowed, expand, slide_ids
            )
        return region_hits(self.collection, codes, k, allowed, slide_ids)

    def search_slide(
        self, slide: str | os.PathLike[str] | int, k: int | None = None, **options: Any
    ) -> SlideSearchResult:
        """Top-k slides like `slide`: an indexed slide (id, path, file name, or a file with
        its content: its stored mosaic, nothing read) or a slide file (its mosaic tiles
        read and described). Options (cbir.search.slide_search.search_slide): `method`
        "pooled" (cosine of mean-pooled codes), "median" or "mosaic" (then median-of-
        minimum to every tile / the mosaic tiles); exclude_query_slide, with `case_label` also
        every slide sharing the query's value of that label; slides and vote as `search`."""
        self._check_open()
        self.bundle.pipeline.descriptor  # noqa: B018  # built on first use; not timed
        k = whole(self.recipe.search.k if k is None else k, "k", 1)
        if "slides" in options:
            options["slides"] = slide_names(options["slides"])
        is_id = not isinstance(slide, (str, os.PathLike))
        query = whole(slide, "slide id", 0) if is_id else str(slide)
        return search_slide(self.collection, query, k, self.min_tissue, **options)

    def tiles_at(self, magnifications: Sequence[float], slide_ids: set[int] | None) -> int:
        """Indexed tiles at these magnifications of these slides (None: every slide)."""
        return tiles_at(self.collection, magnifications, slide_ids)

    def info(self) -> IndexInfo:
        self._check_open()
        return bundle_info(self.collection)


def as_region(query: Query) -> Region | None:
    """The region a query names (a `Region` or a `SLIDE:x,y,w,h[@MAGx]` string), else None."""
    if isinstance(query, Region):
        return query
    if isinstance(query, str) and not Path(query).exists():
        if "@" in query or Region.matches(query):
            return Region.parse(query)
    return None


def open_index(
    path: str | os.PathLike[str], device: str | None = "auto", ray: str | None = None
) -> Index:
    """Open an index bundle for searching (read-only); `device` runs a learned descriptor.
    `ray`: place the segments' indexes on actors of the Ray cluster at this address
    ("auto": join or start one) and search them there; results are the same."""
    bundle = Bundle.open(path, device=device)
    if ray is not None:
        from cbir.distributed.search import shard_on_ray

        try:
            bundle.shards = shard_on_ray(bundle, ray)
        except BaseException:
            bundle.close()
            raise
    return Index(bundle, device)
