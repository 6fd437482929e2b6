"""Storing described slides in a staged segment: codes into per-slide grids and the
segment's Faiss index, records and local features into its LMDB; fitting the collection
state of a new bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.delf.stage import LocalStage
from cbir.describe import DescribedSlide
from cbir.index.binary import BinaryTileIndex
from cbir.index.float import FloatTileIndex
from cbir.index.local import local_index_template
from cbir.index.tile import TileIndex
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe
from cbir.storage.manifest import Manifest
from cbir.storage.metadata import CodeGrid, SlideRecord
from cbir.storage.state import CollectionState, SegmentStage
from cbir.storage.writer import BundleWriter
from cbir.timing import StageTimer


class SlideSummary(BaseModel):
    name: str
    path: str
    slide_id: int
    base_magnification: float
    magnification_source: str
    tiles: int
    tiles_per_magnification: dict[str, int]
    checksum: str = ""  # of the file (size and ends): a second copy has the same


def _code_grids(
    slide_id: int, described: DescribedSlide, pipeline: TilePipeline
) -> tuple[list[CodeGrid], np.ndarray, np.ndarray]:
    """Encode a described slide. Returns its grids and (n, bytes) codes with (n,) tile ids."""
    grids, all_codes, all_ids = [], [], []
    next_local = 0
    for scale in described.scales:
        g = scale.geometry
        n = len(scale.descriptors)
        codes = pipeline.encode(scale.descriptors)
        ids = (np.int64(slide_id) << 32) + np.arange(next_local, next_local + n, dtype=np.int64)
        next_local += n
        grid_ids = np.full((g.rows, g.cols), -1, dtype=np.int64)
        grid_ids[scale.keep] = ids
        grid_codes = np.zeros((g.rows, g.cols, pipeline.code_bytes), dtype=np.uint8)
        grid_codes[scale.keep] = pipeline.code_view(codes)
        grids.append(CodeGrid(slide_id, g, grid_ids, grid_codes))
        all_codes.append(codes)
        all_ids.append(ids)
    return grids, np.concatenate(all_codes), np.concatenate(all_ids)


def _summary(slide_id: int, d: DescribedSlide) -> SlideSummary:
    return SlideSummary(
        name=d.info.name,
        path=d.info.path,
        slide_id=slide_id,
        base_magnification=d.info.base_magnification,
        magnification_source=d.info.magnification_source,
        tiles=d.n_tiles,
        tiles_per_magnification={
            f"{s.geometry.magnification:g}x": len(s.descriptors) for s in d.scales
        },
        checksum=d.checksum,
    )


def store_slides(
    seg: SegmentStage,
    state: CollectionState,
    described: list[DescribedSlide],
    first_id: int,
    timer: StageTimer,
) -> list[SlideSummary]:
    """Encode slides and write them into a staged segment (ids from `first_id`): the
    slide record and code grids, then every product the bundle carries (cbir.storage.artifacts:
    codes for the index, rerank vectors, local features, scale references)."""
    from cbir.storage.artifacts import SlideRows, artifacts_for

    meta = seg.meta
    assert meta is not None
    products = artifacts_for(state)
    summaries = []
    with meta.env.begin(write=True) as txn:
        for offset, d in enumerate(described):
            sid = first_id + offset
            with timer("encode"):
                grids, c, i = _code_grids(sid, d, state.pipeline)
            record = SlideRecord(
                slide_id=sid,
                info=d.info,
                checksum=d.checksum,
                added=_now(),
                min_tissue_fraction=d.min_tissue_fraction,
                magnifications=[s.geometry.magnification for s in d.scales],
                tiles=d.n_tiles,
            )
            rows = SlideRows(txn, sid, d, grids, c, i)
            with timer("metadata"):
                meta.put_slide(txn, record, grids)
            for product in products:
                with timer(product.name):
                    product.store(seg, state, rows)
            summaries.append(_summary(sid, d))
    return summaries


def empty_index_for(pipeline: TilePipeline, recipe: Recipe, xt: np.ndarray) -> TileIndex:
    """The empty index of a collection whose codes are (n, ...) `xt`: trained IVF when
    the recipe and size ask for it."""
    spec = pipeline.encoder_spec
    if spec.kind == "binary":
        return BinaryTileIndex.template(spec.bits, recipe.index, xt)
    return FloatTileIndex.template(spec.dim, recipe.index, xt)


def write_new_bundle(
    writer: BundleWriter,
    recipe: Recipe,
    pipeline: TilePipeline,
    described: list[DescribedSlide],
    timer: StageTimer,
    local: LocalStage | None = None,
    scale_weights: Path | None = None,
    labels: dict[str, dict[str, str]] | None = None,
    segments: int = 1,
) -> tuple[list[SlideSummary], Manifest]:
    """Fit the encoder (and the local PCA) on described slides, encode and store them in
    `segments` segments (consecutive groups of slides, as Ray workers write them), fit
    the empty indexes on all their codes and commit a fresh bundle.
    `labels`: labels to give slides by path (`cbir rebuild` keeps them)."""
    with timer("fit"):
        pipeline.encoder.fit(np.concatenate([s.descriptors for d in described for s in d.scales]))
        if local is not None:
            local.finish_fit()
    first = writer.take_slide_ids(len(described))
    summaries: list[SlideSummary] = []
    state = writer.state = CollectionState(pipeline, None, scale_weights, local)
    bounds = np.linspace(0, len(described), min(segments, len(described)) + 1).round().astype(int)
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        seg = writer.new_segment()
        summaries += store_slides(seg, state, described[lo:hi], first + lo, timer)
    with timer("add"):  # the empty indexes every segment starts from, fitted on all rows
        if local is not None:
            assert recipe.local is not None
            lx = np.concatenate([s.rows("locals")[0] for s in writer.segments])
            state.empty_local = local_index_template(
                recipe.local, lx.reshape(-1, recipe.local.pca_dim)
            )
        xt = np.concatenate([s.rows("codes")[0] for s in writer.segments])
        state.empty_index = empty_index_for(pipeline, recipe, xt)
    for summary in summaries:
        if labels and labels.get(summary.path):
            writer.labels[summary.slide_id] = labels[summary.path]
    with timer("commit"):
        manifest = writer.commit(recipe)
    return summaries, manifest


def _now() -> str:
    from cbir.storage.manifest import now

    return now()
