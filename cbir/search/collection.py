"""What every search step reads from an opened bundle: its files and recipe, the slides
and their code grids, and how its distances map to similarities. The searchers in
cbir.search take a `Collection`, never the API's `Index`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cbir.search.hamming import hamming_matrix
from cbir.search.hits import Hit
from cbir.search.region import GridCache, Pairwise, squared_l2_matrix
from cbir.search.similarity import SimilarityScale, code_scale, vector_scale

if TYPE_CHECKING:
    from cbir.recipes import Recipe
    from cbir.storage.bundle import Bundle
    from cbir.storage.metadata import SlideRecord


@dataclass
class Collection:
    """An opened bundle as the searchers see it. `per_tile`: grid cells per tile side
    (tile / stride; 1 without overlapping tiles)."""

    bundle: Bundle
    slides: dict[int, SlideRecord]
    grids: GridCache
    per_tile: int
    code_similarity: SimilarityScale  # distances between codes (the index's)
    vector_similarity: SimilarityScale  # squared L2 between stored descriptors (rerank)
    #: Slide mosaics read so far ({slide id: StoredMosaic or None}; cbir.search.slide_rank).
    mosaics: dict[int, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle) -> Collection:
        tiling = bundle.recipe.tiling
        pipe = bundle.pipeline
        enc, unit = pipe.encoder_spec, bool(pipe.descriptor_spec.params.get("unit_norm"))
        bits = int(enc.params.get("q", enc.bits))
        normalized = enc.params.get("normalize") or enc.params.get("blocks")
        unit_codes = bool(normalized or (unit and not enc.standardize))  # unit float codes
        return cls(
            bundle=bundle,
            slides={r.slide_id: r for r in bundle.meta.slide_list()},
            grids=GridCache(bundle.meta),
            per_tile=tiling.tile_size // (tiling.stride or tiling.tile_size),
            code_similarity=code_scale(pipe.binary, bits, enc.dim, unit_codes),
            vector_similarity=vector_scale(pipe.descriptor_spec.dim, unit),
        )

    @property
    def recipe(self) -> Recipe:
        return self.bundle.recipe

    @property
    def pairwise(self) -> Pairwise:
        """How two sets of this bundle's codes compare: Hamming on packed bits, squared
        L2 on float vectors ((..., n, e), (..., m, e) -> (..., n, m))."""
        return hamming_matrix if self.bundle.pipeline.binary else squared_l2_matrix

    @property
    def magnifications(self) -> list[float]:
        """Every magnification indexed in the bundle, ascending."""
        return sorted({g for r in self.slides.values() for g in r.magnifications})

    def hit(
        self,
        rank: int,
        slide_id: int,
        magnification: float,
        rect: tuple[int, int, int, int],
        cell: tuple[int, int],
        shape: tuple[int, int],
        distance: float,
        similarity: float,
        **extra: object,
    ) -> Hit:
        """A hit on slide `slide_id`: rect (x, y, w, h) level-0 px, cell (row, col) of its
        top-left tile, shape (rows, cols) in tiles."""
        slide = self.slides[slide_id].info
        x, y, w, h = rect
        return Hit(
            rank=rank,
            slide=slide.name,
            slide_path=slide.path,
            slide_id=slide_id,
            magnification=magnification,
            x=x,
            y=y,
            w=w,
            h=h,
            row=cell[0],
            col=cell[1],
            rows=shape[0],
            cols=shape[1],
            distance=distance,
            similarity=similarity,
            **extra,  # type: ignore[arg-type]
        )
