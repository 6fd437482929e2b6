"""Storing described slides in a staged generation: codes into per-slide grids and the
Faiss index, records and local features into LMDB; removing slides from one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from cbir.delf.stage import LocalStage, local_ids
from cbir.describe import REFERENCES_PER_MAGNIFICATION, DescribedScale, DescribedSlide
from cbir.float_index import FloatTileIndex
from cbir.manifest import Counts, Manifest
from cbir.metadata import CodeGrid, MetadataStore, SlideRecord
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe
from cbir.tile_index import TileIndex, build_tile_index
from cbir.timing import StageTimer
from cbir.writer import BundleWriter


class SlideSummary(BaseModel):
    name: str
    path: str
    slide_id: int
    base_magnification: float
    magnification_source: str
    tiles: int
    tiles_per_magnification: dict[str, int]


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
    )


@dataclass
class LocalRows:
    """Projected local descriptors (n, dim) float32 with their Faiss ids (n,) int64."""

    vectors: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.ids:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(self.vectors), np.concatenate(self.ids)


def _store_locals(
    txn: object,
    meta: MetadataStore,
    local: LocalStage,
    scale: DescribedScale,
    tile_ids: np.ndarray,
    rows: LocalRows,
) -> None:
    """Project a grid's local features, store their level-0 keypoints in LMDB and collect
    their rows for the local index."""
    assert scale.locals is not None
    g = scale.geometry
    rr, cc = np.nonzero(scale.keep)
    xs, ys = g.origin(rr, cc)
    per_px = g.level0_per_px  # level-0 pixels per tile pixel
    counts = []
    for tid, x0, y0, f in zip(
        tile_ids.tolist(), xs.tolist(), ys.tolist(), scale.locals, strict=True
    ):
        f = local.project(f)
        points = np.column_stack(
            [x0 + f.xy[:, 0] * per_px, y0 + f.xy[:, 1] * per_px, f.scales, f.attention]
        ).astype(np.float32)
        meta.put_locals(txn, tid, points, f.descriptors)  # type: ignore[arg-type]
        rows.vectors.append(f.descriptors)
        counts.append(len(f))
    rows.ids.append(local_ids(tile_ids, np.asarray(counts, np.int64)))


def store_slides(
    meta: MetadataStore,
    pipeline: TilePipeline,
    described: list[DescribedSlide],
    first_id: int,
    timer: StageTimer,
    local: LocalStage | None = None,
    local_rows: LocalRows | None = None,
) -> tuple[list[SlideSummary], np.ndarray, np.ndarray]:
    """Encode and write slides into LMDB; returns summaries, (n, bytes) codes, (n,) ids.
    With `local`, projected local rows are appended to `local_rows`."""
    summaries, codes, ids = [], [], []
    with meta.env.begin(write=True) as txn:
        for offset, d in enumerate(described):
            sid = first_id + offset
            with timer("encode"):
                grids, c, i = _code_grids(sid, d, pipeline)
            record = SlideRecord(
                slide_id=sid,
                info=d.info,
                checksum=d.checksum,
                added=_now(),
                min_tissue_fraction=d.min_tissue_fraction,
                magnifications=[s.geometry.magnification for s in d.scales],
                tiles=d.n_tiles,
            )
            with timer("metadata"):
                meta.put_slide(txn, record, grids)
                for mag, tiles in d.references.items():
                    meta.add_reference_tiles(txn, mag, tiles, REFERENCES_PER_MAGNIFICATION)
                if pipeline.recipe.search.rerank and pipeline.binary:
                    meta.put_vectors(txn, i, np.concatenate([sc.descriptors for sc in d.scales]))
            if local is not None and local_rows is not None:
                with timer("local"):
                    for sc, grid in zip(d.scales, grids, strict=True):
                        _store_locals(txn, meta, local, sc, grid.ids[sc.keep], local_rows)
            summaries.append(_summary(sid, d))
            codes.append(c)
            ids.append(i)
    return summaries, np.concatenate(codes), np.concatenate(ids)


def write_new_bundle(
    writer: BundleWriter,
    recipe: Recipe,
    pipeline: TilePipeline,
    described: list[DescribedSlide],
    timer: StageTimer,
    local: LocalStage | None = None,
) -> tuple[list[SlideSummary], Manifest]:
    """Fit the encoder (and the local PCA) on described slides, encode, store and commit
    a fresh bundle."""
    with timer("fit"):
        pipeline.encoder.fit(np.concatenate([s.descriptors for d in described for s in d.scales]))
        if local is not None:
            local.finish_fit()
    writer.pipeline = pipeline
    rows = LocalRows()
    summaries, xb, ids = store_slides(writer.meta, pipeline, described, 1, timer, local, rows)
    with timer("add"):
        writer.index = build_tile_index(pipeline.encoder_spec, recipe.index, xb, ids)
        if local is not None:
            assert recipe.local is not None
            lx, lids = rows.arrays(recipe.local.pca_dim)
            writer.local = local
            writer.local_index = FloatTileIndex.for_collection(
                recipe.local.pca_dim, recipe.local.index_config(), lx, lids
            )
    with timer("commit"):
        manifest = writer.commit(recipe, Counts(slides=len(described), tiles=len(ids)))
    return summaries, manifest


def rebuild_if_needed(index: TileIndex, meta: MetadataStore, pipeline: TilePipeline) -> TileIndex:
    """Switch an exact binary index that has grown past the IVF threshold to a trained IVF."""
    cfg = pipeline.recipe.index
    if index.kind != "flat" or index.ntotal < cfg.ivf_threshold:
        return index
    grids = list(meta.all_grids())
    xb = np.concatenate([g.codes[g.valid] for g in grids])
    ids = np.concatenate([g.ids[g.valid] for g in grids])
    return build_tile_index(pipeline.encoder_spec, cfg, xb, ids)


def drop_slides(writer: BundleWriter, paths: Sequence[str]) -> None:
    """Delete slides from the writer's LMDB, then their rows from the tile index and the
    local index in one call each (an HNSW index is rebuilt on removal: once, not per
    slide)."""
    meta = writer.meta
    assert meta is not None and writer.index is not None
    removed, rows = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    records = {r.slide_id: r for r in meta.slide_list()}
    for path in dict.fromkeys(paths):
        record = records[meta.slide_id_for_path(path)]
        tile_ids = meta.tile_ids_of(record.slide_id)
        rows.append(local_ids(tile_ids, meta.local_counts(tile_ids)))
        with meta.env.begin(write=True) as txn:
            removed.append(meta.delete_slide(txn, record))
    writer.index.remove(np.concatenate(removed))
    if writer.local_index is not None:
        writer.local_index.remove(np.concatenate(rows))


def restore_labels(meta: MetadataStore, labels: dict[str, dict[str, str]]) -> None:
    """Give re-indexed slides (by path) the labels their previous records had."""
    records = [r for r in meta.slide_list() if labels.get(r.info.path)]
    with meta.env.begin(write=True) as txn:
        for r in records:
            meta.put_slide_record(txn, r.model_copy(update={"labels": labels[r.info.path]}))


def _now() -> str:
    from cbir.manifest import now

    return now()
