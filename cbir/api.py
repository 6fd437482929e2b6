"""The Python API: open a bundle and search it."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.bundle import Bundle
from cbir.delf.extract import LocalFeatures
from cbir.errors import QueryError
from cbir.hits import Hit, SearchResult
from cbir.metadata import SlideRecord
from cbir.query import Region, as_rgb, check_tissue, query_tiles, read_region_image
from cbir.search.expansion import expand_query
from cbir.search.hamming import hamming_matrix
from cbir.search.local import VerifiedGroup, verify_tiles, vote_and_verify
from cbir.search.region import (
    GridCache,
    region_candidates,
    squared_l2_matrix,
    suppress_overlaps,
)
from cbir.search.scales import ScaleSelector
from cbir.search.similarity import INLIERS, code_scale, vector_scale
from cbir.slides.open import decode_image

Query = np.ndarray | str | os.PathLike[str] | Region

#: The coarse step of a two-step search keeps codes tied with its K-th, up to K times this.
RERANK_TIE_WIDEN = 8


class SlideEntry(BaseModel):
    slide_id: int
    name: str
    path: str
    base_magnification: float
    magnification_source: str
    magnifications: list[float]
    tiles: int
    added: str
    labels: dict[str, str] = {}


class IndexInfo(BaseModel):
    """What `cbir info` shows."""

    path: str
    format_version: int
    recipe: str
    descriptor: str
    encoder: str
    bits: int
    index_kind: str
    nlist: int | None
    nprobe: int
    generation: int
    slides: list[SlideEntry]
    tiles: int
    bytes_on_disk: int
    bit_statistics: dict[str, float] | None = None  # binary recipes: over the indexed codes
    local_features: int | None = None  # rows of the local-feature index (--verify)
    created: str
    updated: str


class Index:
    """An opened bundle. `search` takes an image array, an image file, a `Region` or a
    region string `slide.svs:x,y,w,h@20x`."""

    def __init__(self, bundle: Bundle, device: str | None = "auto") -> None:
        self.bundle = bundle
        self.device = device
        self.recipe = bundle.recipe
        self.slides: dict[int, SlideRecord] = {r.slide_id: r for r in bundle.meta.slide_list()}
        self._by_path = {r.info.path: r for r in self.slides.values()}
        self.grids = GridCache(bundle.meta)
        self.scale_selector = ScaleSelector(self)
        tiling = self.recipe.tiling
        #: Grid cells per tile side (tile / stride; 1 without overlapping tiles).
        self.per_tile = tiling.tile_size // (tiling.stride or tiling.tile_size)
        pipe = bundle.pipeline
        enc, unit = pipe.encoder_spec, bool(pipe.descriptor_spec.params.get("unit_norm"))
        bits = int(enc.params.get("q", enc.bits))
        unit_codes = bool(
            enc.params.get("normalize")
            or enc.params.get("blocks")
            or (unit and not enc.standardize)
        )  # float codes are unit vectors
        self.code_similarity = code_scale(pipe.binary, bits, enc.dim, unit_codes)
        self.vector_similarity = vector_scale(pipe.descriptor_spec.dim, unit)
        #: A query needs one tile with this much tissue (the loosest threshold indexed).
        self.min_tissue = min(
            (r.min_tissue_fraction for r in self.slides.values()),
            default=self.recipe.tiling.min_tissue_fraction,
        )

    def close(self) -> None:
        self.bundle.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- query preparation ------------------------------------------------------------
    def query_image(self, query: Query) -> tuple[np.ndarray, str]:
        """Resolve a query to its (h, w, 3) uint8 pixels and a display name."""
        if isinstance(query, np.ndarray):
            return as_rgb(query, "<array>"), "<array>"
        query = as_region(query) or query
        if isinstance(query, Region):
            stored = self._by_path.get(str(Path(query.slide).resolve()))
            base = stored.info.base_magnification if stored else None
            return read_region_image(query, base), str(query)
        path = Path(query)
        return decode_image(path), str(path)

    def query_codes(self, image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(h, w, 3) uint8 -> descriptors (m, n, d) float32 and codes (m, n, e) of its tile
        grid (e = bits / 8 uint8 for binary recipes, dim float32 for float ones)."""
        return self.tile_codes(query_tiles(image, self.recipe.tiling.tile_size, name))

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
        return sorted({g for r in self.slides.values() for g in r.magnifications})

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
    ) -> SearchResult:
        """Top-k tiles (one-tile query) or regions (larger query) over every slide.

        scale: "all" searches every indexed magnification; "20x" one of them; "auto" those
        the bundle's scale comparator finds most like the query, with their neighbours.
        verify: rank by local-feature RANSAC inliers (None: the recipe's default). Needs a
        bundle with local features; candidates come from local-feature votes or from this
        search's own top hits, as the recipe's [local] section says.
        allow_background: search a query without tissue (refused by default: none of its
        tiles has the tissue fraction the bundle's tiles were indexed with).
        min_similarity: drop hits whose similarity in [0, 1] is below it (fewer than k
        hits may come back; `below_min_similarity` counts the dropped ones).
        expand: query expansion of tile queries (None: the recipe's; 0: off).
        slides: search only these slides (paths or file names; an unknown one is an error).
        exclude_query_slide: drop hits on a region query's own slide (the same file, by
        path or checksum). Filters apply before the top k, so k hits come back when the
        kept slides have them.
        vote: a label key: `result.vote` is the majority vote of the hits' values (mMV@k).
        """
        start = time.perf_counter()
        k = self.recipe.search.k if k is None else k
        expand = self.recipe.search.expand if expand is None else expand
        if k < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        verify = self.recipe.search.verify if verify is None else verify
        local = self.recipe.local
        if verify and (local is None or self.bundle.local is None):
            raise QueryError(
                f"{self.bundle.root}: bundle has no local features for --verify (build it "
                "with --local-weights, or with recipe delf-hnsw)"
            )
        keep = self.slide_filter(query, slides, exclude_query_slide)
        image, name = self.query_image(query)
        t = self.recipe.tiling.tile_size
        if verify and local is not None and local.candidates_from == "votes":
            if not allow_background:
                check_tissue(image, t, self.min_tissue, name)
            result = self._local_search(image, name, k, scale, start, keep)
            return self._finished(result, k, min_similarity, keep, exclude_query_slide, vote)
        tiles = query_tiles(image, t, name)
        if not allow_background:
            check_tissue(image, t, self.min_tissue, name)
        allowed, probabilities = self.scale_selector.select(scale, tiles)
        x, codes = self.tile_codes(tiles)
        m, n = codes.shape[:2]
        query_features = None
        if verify:
            assert local is not None
            hits = self.search_codes(
                codes, max(k, local.candidates), x, allowed, expand, slide_ids=keep
            )
            features = self._query_features(image)
            hits = self.verify_hits(features, hits, k)
            query_features = len(features)
        else:
            hits = self.search_codes(codes, k, x, allowed, expand, slide_ids=keep)
        result = SearchResult(
            query=name,
            query_rows=m,
            query_cols=n,
            magnifications=self.magnifications,
            scale=scale,
            searched_magnifications=sorted(allowed) if allowed else self.magnifications,
            scale_probabilities=probabilities,
            verified=verify,
            query_features=query_features,
            hits=hits,
            seconds=round(time.perf_counter() - start, 6),
            distance_kind=(
                self.vector_similarity if m * n == 1 and self._reranks(x) else self.code_similarity
            ).kind,
        )
        return self._finished(result, k, min_similarity, keep, exclude_query_slide, vote)

    # -- filters and labels -----------------------------------------------------------
    def slide_filter(
        self, query: Query, slides: Sequence[str] | None, exclude_query_slide: bool
    ) -> set[int] | None:
        """Slide ids a search may return (None: every slide): `slides` by path or file
        name, less a region query's own slide with `exclude_query_slide`."""
        from cbir.labels import find_slide

        if slides is None and not exclude_query_slide:
            return None
        records = list(self.slides.values())
        keep = (
            {find_slide(records, s, self.bundle.root).slide_id for s in slides}
            if slides is not None
            else set(self.slides)
        )
        if exclude_query_slide:
            region = as_region(query)
            if region is None:
                raise QueryError(
                    "--exclude-query-slide needs a region query (SLIDE:x,y,w,h@MAGx); "
                    f"{query if not isinstance(query, np.ndarray) else '<array>'} is an image"
                )
            keep -= self._own_slide_ids(region.slide)
            if not keep:
                raise QueryError(
                    f"{region}: nothing to search: the only slides left are the query's own"
                )
        return keep

    def _own_slide_ids(self, path: str) -> set[int]:
        """Ids of the indexed slides that are the file `path`: same path or same checksum."""
        from cbir.slides.open import file_checksum

        p = Path(path)
        ids = {r.slide_id for r in self.slides.values() if r.info.path == str(p.resolve())}
        if not ids and p.is_file():
            checksum = file_checksum(p)
            ids = {r.slide_id for r in self.slides.values() if r.checksum == checksum}
        return ids

    def _finished(
        self,
        result: SearchResult,
        k: int,
        min_similarity: float | None,
        keep: set[int] | None,
        exclude_query_slide: bool,
        vote: str | None,
    ) -> SearchResult:
        """Drop weak hits; attach the slides' labels, the filters and the vote."""
        from cbir.labels import check_key, majority_vote

        result = self._filtered(result, k, min_similarity)
        hits = result.hits
        if any(r.labels for r in self.slides.values()):
            hits = [h.model_copy(update={"labels": self.slides[h.slide_id].labels}) for h in hits]
        update: dict[str, object] = {"hits": hits, "exclude_query_slide": exclude_query_slide}
        if keep is not None:
            update["slides"] = sorted(self.slides[s].info.name for s in keep)
        if vote is not None:
            update["vote"] = majority_vote(hits, check_key(vote))
        if len(hits) < k:  # say why: how many tiles there were to find
            update["searched_tiles"] = self.tiles_at(result.searched_magnifications, keep)
        return result.model_copy(update=update)

    def tiles_at(self, magnifications: Sequence[float], slide_ids: set[int] | None) -> int:
        """Indexed tiles at these magnifications of these slides (None: every slide)."""
        ids = self.slides if slide_ids is None else slide_ids
        if set(magnifications) >= set(self.magnifications):
            return sum(self.slides[s].tiles for s in ids)
        grids = (self.grids.get(s, m) for s in ids for m in magnifications)
        return sum(int(g.valid.sum()) for g in grids if g is not None)

    @staticmethod
    def _filtered(result: SearchResult, k: int, min_similarity: float | None) -> SearchResult:
        """Drop hits below `min_similarity` (ranks renumbered); record k and what fell."""
        hits = result.hits
        if min_similarity is not None:
            hits = [h for h in hits if (h.similarity or 0.0) >= min_similarity]
            hits = [h.model_copy(update={"rank": i}) for i, h in enumerate(hits, 1)]
        return result.model_copy(
            update={
                "hits": hits,
                "k": k,
                "min_similarity": min_similarity,
                "below_min_similarity": len(result.hits) - len(hits),
            }
        )

    # -- local features (--verify) ----------------------------------------------------
    def _query_features(self, image: np.ndarray) -> LocalFeatures:
        assert self.bundle.local is not None
        return self.bundle.local.query(image)

    def _level0_per_px(self, slide_id: int, magnification: float) -> float:
        return self.slides[slide_id].info.base_magnification / magnification

    def verify_hits(self, features: LocalFeatures, hits: list[Hit], k: int) -> list[Hit]:
        """Verify coarse hits against the query's local features; rank them by inliers
        (ties keep the coarse order); the top k, with their inliers and transforms."""
        local = self.recipe.local
        assert local is not None
        scored = []
        for h in hits:
            if h.tile_id is not None:
                ids = np.array([h.tile_id], np.int64)
            else:
                g = self.grids.get(h.slide_id, h.magnification)
                f = g.geometry.per_tile  # a region of rows x cols tiles spans this many cells
                rows, cols = (h.rows - 1) * f + 1, (h.cols - 1) * f + 1
                block = g.ids[h.row : h.row + rows, h.col : h.col + cols]
                ids = block[block >= 0]
            v, affine = verify_tiles(
                features,
                self.bundle.meta,
                ids,
                self._level0_per_px(h.slide_id, h.magnification),
                local,
            )
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

    def _local_search(
        self,
        image: np.ndarray,
        name: str,
        k: int,
        scale: str,
        start: float,
        slide_ids: set[int] | None = None,
    ) -> SearchResult:
        """Local-feature votes -> RANSAC per (slide, magnification) -> rank by inliers.
        Each hit is the query's footprint mapped into the slide by the fitted transform."""
        local = self.recipe.local
        assert local is not None and self.bundle.local_index is not None
        t = self.recipe.tiling.tile_size
        h_px, w_px = image.shape[:2]
        allowed, probabilities = self.scale_selector.select(
            scale, lambda: query_tiles(image, t, name)
        )
        features = self._query_features(image)
        groups = vote_and_verify(
            features,
            self.bundle.local_index,
            self.bundle.meta,
            local,
            {sid: r.info.base_magnification for sid, r in self.slides.items()},
            allowed,
            slide_ids=slide_ids,
        )
        hits = []
        for g in groups:
            if g.inliers < local.min_inliers or g.affine_level0 is None:
                continue
            hits.append(self._footprint_hit(len(hits) + 1, g, w_px, h_px))
            if len(hits) == k:
                break
        return SearchResult(
            query=name,
            query_rows=max(1, h_px // t),
            query_cols=max(1, w_px // t),
            magnifications=self.magnifications,
            scale=scale,
            searched_magnifications=sorted(allowed) if allowed else self.magnifications,
            scale_probabilities=probabilities,
            verified=True,
            query_features=len(features),
            hits=hits,
            seconds=round(time.perf_counter() - start, 6),
            distance_kind="inliers",
        )

    def _footprint_hit(self, rank: int, g: VerifiedGroup, w_px: int, h_px: int) -> Hit:
        """A hit covering the query's corners mapped by the group's transform (level-0
        bounding box, clipped to the slide)."""
        assert g.affine_level0 is not None
        slide = self.slides[g.slide_id]
        corners = np.array([[0, 0, 1], [w_px, 0, 1], [0, h_px, 1], [w_px, h_px, 1]], float)
        mapped = corners @ g.affine_level0.T
        x0, y0 = np.clip(mapped.min(axis=0), 0, [slide.info.width, slide.info.height])
        x1, y1 = np.clip(mapped.max(axis=0), 0, [slide.info.width, slide.info.height])
        geometry = self.grids.get(g.slide_id, g.magnification).geometry
        row, col = int(y0 // geometry.step), int(x0 // geometry.step)
        return Hit(
            rank=rank,
            slide=slide.info.name,
            slide_path=slide.info.path,
            slide_id=g.slide_id,
            magnification=g.magnification,
            x=int(round(x0)),
            y=int(round(y0)),
            w=max(1, int(round(x1 - x0))),
            h=max(1, int(round(y1 - y0))),
            row=row,
            col=col,
            # tiles, not cells: with a stride a tile spans per_tile cells
            rows=max(1, -(-(int(np.ceil(y1 / geometry.step)) - row) // geometry.per_tile)),
            cols=max(1, -(-(int(np.ceil(x1 / geometry.step)) - col) // geometry.per_tile)),
            distance=-float(g.inliers),
            similarity=INLIERS(g.inliers),
            inliers=g.inliers,
            matches=g.verification.matches,
            affine=np.round(g.affine_level0, 6).tolist(),
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
            x1 = None if x is None else x.reshape(1, -1)
            return self.tile_hits(codes.reshape(1, -1), k, x1, allowed, expand, slide_ids)
        return self.region_hits(codes, k, allowed, slide_ids)

    def _reranks(self, x: np.ndarray | None) -> bool:
        """Whether a tile search is two-step (Hamming, then L2 on stored descriptors)."""
        return bool(self.recipe.search.rerank and self.bundle.pipeline.binary and x is not None)

    def _ranked_tiles(
        self, xq: np.ndarray, k: int, x: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._reranks(x):
            assert x is not None and self.recipe.search.rerank
            return self.rerank(xq, x, k, max(self.recipe.search.rerank, k))
        return self.bundle.index.search_tie_ordered(xq, k)

    def tile_hits(
        self,
        xq: np.ndarray,
        k: int,
        x: np.ndarray | None = None,
        allowed: set[float] | None = None,
        expand: int = 0,
        slide_ids: set[int] | None = None,
    ) -> list[Hit]:
        """Top-k tiles for one query code (1, e), ties by tile id: by Hamming (binary), by
        squared L2 (float), or coarse top-`rerank` by Hamming then squared L2 between the
        descriptor `x` (1, d) and the stored descriptors (two-step recipes). With `allowed`
        magnifications or `slide_ids` the search widens until k of theirs are found."""
        ntotal = self.bundle.index.ntotal
        if ntotal == 0:
            return []
        if expand and not self.bundle.pipeline.binary:
            xq = self._expanded(xq, expand)
        share = len(allowed) / max(1, len(self.magnifications)) if allowed else 1.0
        if slide_ids is not None:
            share *= sum(self.slides[s].tiles for s in slide_ids) / max(1, ntotal)
        filtered = allowed is not None or slide_ids is not None
        want = k if not filtered else int(np.ceil(2 * k / max(share, 1e-9)))
        while True:
            D, I = self._ranked_tiles(xq, want, x)
            records = self.bundle.meta.tiles_of(I)
            if not filtered:
                break
            keep = [
                i
                for i, r in enumerate(records)
                if (allowed is None or r.magnification in allowed)
                and (slide_ids is None or r.slide_id in slide_ids)
            ]
            if len(keep) >= k or want >= ntotal or len(I) < want:
                D, I, records = D[keep], I[keep], [records[i] for i in keep]
                break
            want *= 4
        similarity = self.vector_similarity if self._reranks(x) else self.code_similarity
        hits = []
        for rank, (dist, rec, tid) in enumerate(
            zip(D[:k].tolist(), records[:k], I[:k].tolist(), strict=True), 1
        ):
            slide = self.slides[rec.slide_id]
            hits.append(
                Hit(
                    rank=rank,
                    slide=slide.info.name,
                    slide_path=slide.info.path,
                    slide_id=rec.slide_id,
                    magnification=rec.magnification,
                    x=rec.x,
                    y=rec.y,
                    w=rec.w,
                    h=rec.h,
                    row=rec.row,
                    col=rec.col,
                    rows=1,
                    cols=1,
                    distance=round(float(dist), 6),
                    similarity=similarity(float(dist)),
                    tile_id=tid,
                )
            )
        return hits

    def _expanded(self, xq: np.ndarray, expand: int) -> np.ndarray:
        """alpha-QE of a float query (1, d) with its `expand` nearest stored vectors."""
        if self.code_similarity.kind != "unit_l2":
            raise QueryError(
                f"{self.bundle.root}: query expansion needs unit float vectors "
                f"(recipe {self.recipe.name!r} does not normalise them)"
            )
        _, I = self.bundle.index.search_tie_ordered(xq, expand)
        vectors = []
        for rec in self.bundle.meta.tiles_of(I):
            grid = self.grids.get(rec.slide_id, rec.magnification)
            vectors.append(self.bundle.pipeline.codes_from_bytes(grid.codes[rec.row, rec.col]))
        if not vectors:
            return xq
        return expand_query(xq[0], np.stack(vectors), self.recipe.search.expand_alpha)[None]

    def rerank(
        self, xq: np.ndarray, x: np.ndarray, k: int, coarse_k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Coarse top-`coarse_k` by Hamming (plus codes tied with the last, up to
        RERANK_TIE_WIDEN x), fine order by squared L2 on the stored descriptors.
        Returns D (m,) float64 squared L2, I (m,) int64, m <= k, ties by id."""
        ntotal = self.bundle.index.ntotal
        D, I = self.bundle.index.search(xq, coarse_k)
        D, I = D[0][I[0] >= 0], I[0][I[0] >= 0]
        if len(I) == coarse_k < ntotal:  # keep every code tied with the K-th (short codes tie)
            D2, I2 = self.bundle.index.search(xq, min(ntotal, coarse_k * RERANK_TIE_WIDEN))
            keep = (D2[0] <= D[-1]) & (I2[0] >= 0)
            I = I2[0][keep]
        stored = self.bundle.meta.vectors_of(I, x.shape[1])
        D = ((stored.astype(np.float64) - x.astype(np.float64)) ** 2).sum(axis=1)
        D = np.where(np.isnan(D), np.inf, D)  # a tile without a stored vector goes last
        order = np.lexsort((I, D))[:k]
        return D[order], I[order]

    def region_hits(
        self,
        codes: np.ndarray,
        k: int,
        allowed: set[float] | None = None,
        slide_ids: set[int] | None = None,
    ) -> list[Hit]:
        """Top-k non-overlapping m x n sub-grids by D = d_near(Q, B') + d_near(B', Q).
        With `slide_ids`, candidates on other slides are dropped and the query tiles'
        seeds widen (x4) until k regions remain or every tile seeds."""
        m, n = codes.shape[:2]
        cfg = self.recipe.search
        seeds, max_seeds = cfg.region_seeds, cfg.region_max_seeds
        while True:
            cands = region_candidates(
                codes,
                self.bundle.index,
                self.bundle.meta,
                self.grids,
                seeds,
                cfg.region_min_valid,
                max_seeds,
                decode=self.bundle.pipeline.codes_from_bytes,
                pairwise=hamming_matrix if self.bundle.pipeline.binary else squared_l2_matrix,
                allowed=allowed,
                per_tile=self.per_tile,
            )
            if slide_ids is not None:
                cands = [c for c in cands if c.slide_id in slide_ids]
            kept = suppress_overlaps(cands, m, n, k, self.per_tile)
            if slide_ids is None or len(kept) >= k or seeds >= self.bundle.index.ntotal:
                break
            seeds, max_seeds = seeds * 4, None if max_seeds is None else max_seeds * 4
        hits = []
        for rank, c in enumerate(kept, 1):
            slide = self.slides[c.slide_id]
            geometry = self.grids.get(c.slide_id, c.magnification).geometry
            x, y, w, h = geometry.tiles_rect(c.r0, c.c0, m, n)
            hits.append(
                Hit(
                    rank=rank,
                    slide=slide.info.name,
                    slide_path=slide.info.path,
                    slide_id=c.slide_id,
                    magnification=c.magnification,
                    x=x,
                    y=y,
                    w=w,
                    h=h,
                    row=c.r0,
                    col=c.c0,
                    rows=m,
                    cols=n,
                    distance=round(c.distance, 6),
                    similarity=self.code_similarity(c.distance, region=True),
                )
            )
        return hits

    def info(self) -> IndexInfo:
        from cbir.eval.bits import bit_statistics  # (cbir.eval imports the eval harness)

        man = self.bundle.manifest
        root = self.bundle.root
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        stats = None
        if self.bundle.pipeline.binary and man.counts.tiles:
            codes = np.concatenate([g.codes[g.valid] for g in self.bundle.meta.all_grids()])
            q = int(man.encoder.params.get("q", man.encoder.bits))  # without byte padding
            bits = np.unpackbits(codes, axis=1, bitorder="little")[:, :q].astype(bool)
            stats = bit_statistics(bits)
        return IndexInfo(
            path=str(root),
            format_version=man.format_version,
            recipe=man.recipe.name,
            descriptor=man.descriptor.name,
            encoder=man.encoder.name,
            bits=man.encoder.bits,
            index_kind=man.index_kind,
            nlist=man.nlist,
            nprobe=self.bundle.index.nprobe,
            generation=man.generation,
            tiles=man.counts.tiles,
            bytes_on_disk=size,
            bit_statistics=stats,
            local_features=man.local.features if man.local else None,
            created=man.created,
            updated=man.updated,
            slides=[
                SlideEntry(
                    slide_id=r.slide_id,
                    name=r.info.name,
                    path=r.info.path,
                    base_magnification=r.info.base_magnification,
                    magnification_source=r.info.magnification_source,
                    magnifications=r.magnifications,
                    tiles=r.tiles,
                    added=r.added,
                    labels=r.labels,
                )
                for r in self.slides.values()
            ],
        )


def as_region(query: Query) -> Region | None:
    """The region a query names (a `Region` or a `SLIDE:x,y,w,h@MAGx` string), else None."""
    if isinstance(query, Region):
        return query
    if isinstance(query, str) and not Path(query).exists() and "@" in query:
        return Region.parse(query)
    return None


def open_index(path: str | os.PathLike[str], device: str | None = "auto") -> Index:
    """Open an index bundle for searching (read-only); `device` runs a learned descriptor."""
    return Index(Bundle.open(path, device=device), device)
