"""Indexing: slides -> tiles -> descriptors -> codes -> Faiss + LMDB, in one transaction."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.bundle import BundleWriter, Counts, Manifest, transaction
from cbir.delf.extract import LocalFeatures
from cbir.delf.stage import LocalStage, local_ids
from cbir.errors import (
    BundleMismatchError,
    CbirError,
    DuplicateSlideError,
    EmptyTissueError,
    SlideReadError,
)
from cbir.float_index import FloatTileIndex
from cbir.metadata import CodeGrid, MetadataStore, SlideRecord
from cbir.pipeline import TilePipeline
from cbir.progress import NoProgress, Progress
from cbir.recipes import ComponentConfig, LocalConfig, Recipe, load_recipe
from cbir.slides import Slide, SlideInfo, open_slide
from cbir.slides.open import file_checksum
from cbir.tile_index import TileIndex, build_tile_index
from cbir.tiling import (
    CellRun,
    GridGeometry,
    SuperBlock,
    cut_run_tiles,
    grid_for,
    read_superblock,
    slide_magnifications,
    slide_tissue,
    superblock_side,
    superblocks,
    tissue_cells,
)
from cbir.timing import StageTimer

log = logging.getLogger("cbir")

#: Sample tiles kept per magnification for scale detection.
REFERENCES_PER_MAGNIFICATION = 8

#: Threads reading and describing super-blocks.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class DescribedScale:
    """Descriptors of the kept (tissue) cells of one grid, in row-major order of `keep`."""

    geometry: GridGeometry
    keep: np.ndarray  # (rows, cols) bool
    descriptors: np.ndarray  # (keep.sum(), d) float32
    #: Local features per kept cell (same order), keypoints in tile pixels; None without.
    locals: list[LocalFeatures] | None = None


@dataclass
class DescribedSlide:
    info: SlideInfo
    checksum: str
    min_tissue_fraction: float
    scales: list[DescribedScale]
    references: dict[float, np.ndarray] = field(default_factory=dict)  # {mag: (r,t,t,3)}

    @property
    def n_tiles(self) -> int:
        return sum(len(s.descriptors) for s in self.scales)


class SlideSummary(BaseModel):
    name: str
    path: str
    slide_id: int
    base_magnification: float
    magnification_source: str
    tiles: int
    tiles_per_magnification: dict[str, int]


class IndexReport(BaseModel):
    """What a build or add did, with stage timings (seconds)."""

    bundle: str
    recipe: str
    added: list[SlideSummary]
    replaced: list[str]
    removed: list[str]
    slides_total: int
    tiles_total: int
    index_kind: str
    seconds: float
    stage_seconds: dict[str, float]
    skipped: list[SkippedSlide] = []  # --skip-errors: slides left out, with why


class SkippedSlide(BaseModel):
    """A slide `--skip-errors` left out: unreadable, or no tissue."""

    path: str
    reason: str


#: What `--skip-errors` skips: a slide that cannot be read or has no tissue tile.
SKIPPABLE = (SlideReadError, EmptyTissueError)


@dataclass
class SlidePlan:
    """A slide checked and tiled, before any tile is read: what `describe_plan` will do."""

    path: Path
    info: SlideInfo
    checksum: str
    base_magnification: float | None  # the caller's fallback, to reopen the same way
    min_tissue_fraction: float
    grids: list[GridGeometry]
    keeps: list[np.ndarray]  # (rows, cols) bool per grid

    @property
    def n_tiles(self) -> int:
        return int(sum(k.sum() for k in self.keeps))


def plan_slide(
    path: str | os.PathLike[str],
    recipe: Recipe,
    base_magnification: float | None = None,
    min_tissue_fraction: float | None = None,
    timer: StageTimer | None = None,
) -> SlidePlan:
    """Open a slide, find its magnifications and tissue tiles. Cheap (a thumbnail).

    Raises `SlideReadError` for an unreadable file, `EmptyTissueError` when no tile qualifies.
    """
    timer = timer or StageTimer()
    tiling = recipe.tiling
    min_tissue = tiling.min_tissue_fraction if min_tissue_fraction is None else min_tissue_fraction
    with timer("open"):
        slide = open_slide(path, base_magnification)
        checksum = file_checksum(Path(path))
    with slide:
        mags = slide_magnifications(slide.info.base_magnification, tiling.magnifications)
        if not mags:
            raise EmptyTissueError(
                f"{path}: base magnification {slide.info.base_magnification:g}x is below every "
                f"indexed magnification ({', '.join(f'{m:g}x' for m in tiling.magnifications)})"
            )
        with timer("tissue"):
            grids = [grid_for(slide, m, tiling.tile_size, tiling.stride) for m in mags]
            tissue = slide_tissue(slide, smallest_tile=min(g.size for g in grids))
            keeps = [tissue_cells(g, tissue, min_tissue) for g in grids]
    plan = SlidePlan(Path(path), slide.info, checksum, base_magnification, min_tissue, grids, keeps)
    if plan.n_tiles == 0:
        raise EmptyTissueError(
            f"{path}: no tile has at least {min_tissue:.0%} tissue at any magnification "
            f"({', '.join(f'{m:g}x' for m in mags)}); nothing to index "
            "(lower --min-tissue to index it anyway)"
        )
    return plan


def describe_plan(
    plan: SlidePlan,
    pipeline: TilePipeline,
    progress: Progress | None = None,
    timer: StageTimer | None = None,
    workers: int = DEFAULT_WORKERS,
    references: bool = False,
    local: LocalStage | None = None,
) -> DescribedSlide:
    """Read and describe the tissue tiles of a planned slide (and, with `references`,
    keep sample tiles per magnification for scale detection; with `local`, extract each
    tile's local features too).

    Each level-0 super-block is read once and cut into the tiles of every magnification;
    super-blocks run on `workers` threads (decoding and resizing release the GIL).
    Stage timings are summed over threads (thread-seconds).
    """
    progress = progress or NoProgress()
    timer = timer or StageTimer()
    grids, keeps = plan.grids, plan.keeps
    if plan.info.magnification_source == "default":
        log.warning(
            "%s: no objective power or mpp in the file; assuming base magnification %gx "
            "(set --base-magnification to change)",
            plan.path,
            plan.info.base_magnification,
        )
    with timer("open"):
        slide = open_slide(plan.path, plan.base_magnification)
    with slide:
        progress.start(plan.info.name, plan.n_tiles)
        dim = pipeline.descriptor_spec.dim
        fulls = [np.zeros((g.rows, g.cols, dim), dtype=np.float32) for g in grids]
        local_grids = [np.empty((g.rows, g.cols), dtype=object) for g in grids]

        def work(sb: SuperBlock) -> list[tuple[CellRun, np.ndarray, list[LocalFeatures]]]:
            """Read one super-block and describe its kept cells (runs in a worker thread)."""
            with timer("read"):
                block, ds = read_superblock(slide, sb)
            done = []
            for run in sb.runs:
                sub_keep = keeps[run.scale][
                    run.r0 : run.r0 + run.nrows, run.c0 : run.c0 + run.ncols
                ]
                if sub_keep.any():
                    with timer("resize"):
                        tiles = cut_run_tiles(block, ds, sb, grids[run.scale], run)[sub_keep]
                    with timer("describe"):
                        x = pipeline.describe(tiles)
                    feats: list[LocalFeatures] = []
                    if local is not None:
                        with timer("local"):
                            feats = local.extract_tiles(tiles)
                    done.append((run, x, feats))
            return done

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(work, superblocks(grids, keeps, superblock_side(grids))):
                for run, x, feats in done:
                    rows = slice(run.r0, run.r0 + run.nrows)
                    cols = slice(run.c0, run.c0 + run.ncols)
                    fulls[run.scale][rows, cols][keeps[run.scale][rows, cols]] = x
                    if local is not None:
                        local.observe(feats)
                        rr, cc = np.nonzero(keeps[run.scale][rows, cols])
                        for r, c, f in zip(rr.tolist(), cc.tolist(), feats, strict=True):
                            local_grids[run.scale][run.r0 + r, run.c0 + c] = f
                    progress.advance(len(x))
        scales = [
            DescribedScale(g, k, f[k], list(lg[k]) if local is not None else None)
            for g, k, f, lg in zip(grids, keeps, fulls, local_grids, strict=True)
        ]
        refs = {}
        if references:
            with timer("references"):
                refs = reference_tiles(slide, grids, keeps)
    return DescribedSlide(plan.info, plan.checksum, plan.min_tissue_fraction, scales, refs)


def reference_tiles(
    slide: Slide,
    grids: list[GridGeometry],
    keeps: list[np.ndarray],
    per_grid: int = REFERENCES_PER_MAGNIFICATION,
) -> dict[float, np.ndarray]:
    """Up to `per_grid` tissue tiles per magnification, evenly spread over the kept cells:
    {mag: (r, t, t, 3) uint8}. Scale detection compares queries with them."""
    out = {}
    for grid, keep in zip(grids, keeps, strict=True):
        rr, cc = np.nonzero(keep)
        if not len(rr):
            continue
        pick = np.unique(np.linspace(0, len(rr) - 1, min(per_grid, len(rr))).round().astype(int))
        tiles = []
        for i in pick.tolist():
            x, y, w, h = grid.rect(int(rr[i]), int(cc[i]))
            t = grid.tile_size
            tiles.append(slide.read_resized(x, y, w, h, t, t))
        out[grid.magnification] = np.stack(tiles)
    return out


def describe_slides(
    paths: Sequence[Path],
    pipeline: TilePipeline,
    recipe: Recipe,
    base_magnification: float | None,
    min_tissue_fraction: float | None,
    progress: Progress | None,
    timer: StageTimer,
    references: bool = False,
    local: LocalStage | None = None,
    skipped: list[SkippedSlide] | None = None,
) -> list[DescribedSlide]:
    """Plan every slide first (so bad input fails before any long work), then describe.
    `references`: keep sample tiles for `--scale auto` (bundles with a scale comparator).
    `skipped`: when given, a slide that cannot be read or has no tissue is listed there
    and left out instead of failing the whole call."""

    def plan(p: Path) -> SlidePlan | Exception:
        try:
            return plan_slide(p, recipe, base_magnification, min_tissue_fraction, timer)
        except SKIPPABLE as exc:
            if skipped is None:
                raise
            return exc

    with ThreadPoolExecutor(max_workers=DEFAULT_WORKERS) as pool:  # thumbnails decode in C
        planned = list(pool.map(plan, paths))
    described = []
    for path, result in zip(paths, planned, strict=True):
        try:
            if isinstance(result, Exception):
                raise result
            described.append(
                describe_plan(result, pipeline, progress, timer, references=references, local=local)
            )
        except SKIPPABLE as exc:
            if skipped is None:
                raise
            skipped.append(SkippedSlide(path=str(path), reason=str(exc)))
    return described


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


def _store_slides(
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


def _now() -> str:
    from cbir.bundle import now

    return now()


def _unique_paths(
    paths: Sequence[str | os.PathLike[str]], skipped: list[SkippedSlide] | None = None
) -> list[Path]:
    """Absolute paths, duplicates dropped (first kept); SlideReadError naming a path that
    cannot be resolved (a symlink loop), or an entry in `skipped` when it is given."""
    seen: dict[Path, None] = {}
    for p in paths:
        try:
            seen.setdefault(Path(p).resolve(), None)
        except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            error = f"{p}: cannot resolve the path ({exc})"
            if skipped is None:
                raise SlideReadError(error) from None
            skipped.append(SkippedSlide(path=str(p), reason=error))
    return list(seen)


def _nothing_left(skipped: list[SkippedSlide]) -> CbirError:
    return CbirError(
        f"no slide could be indexed: all {len(skipped)} were skipped (first: {skipped[0].reason})"
    )


def build_index(
    slides: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    recipe: str | os.PathLike[str] | Recipe = "stats-lsh32",
    *,
    base_magnification: float | None = None,
    min_tissue_fraction: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = "auto",
    scale_weights: str | os.PathLike[str] | None = None,
    local_weights: str | os.PathLike[str] | None = None,
    skip_errors: bool = False,
) -> IndexReport:
    """Index `slides` into a new bundle at `out` (atomic: on any error nothing is written).
    `skip_errors`: leave out slides that cannot be read or have no tissue (listed in the
    report's `skipped`) instead of failing; it fails when none is left.
    `weights`: model file of a learned descriptor, copied into the bundle;
    `scale_weights`: a scale comparator (`cbir train scale`) for `--scale auto`;
    `local_weights`: DELF weights (`cbir train delf`): store local features for `--verify`
    (recipes with a [local] section have them anyway)."""
    start = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(str(recipe))
    skipped: list[SkippedSlide] | None = [] if skip_errors else None
    paths = _unique_paths(slides, skipped)
    if not paths:
        raise _nothing_left(skipped) if skipped else CbirError("no slides given")
    timer = StageTimer()
    pipeline = TilePipeline(recipe, weights=weights, device=device)
    recipe, local = local_stage_for(recipe, weights, local_weights, device)
    if scale_weights is not None:
        from cbir.nn.weights import load_weights

        load_weights(scale_weights, "scale")  # refuse a wrong file before any work
    with transaction(out, create=True, overwrite=overwrite) as writer:
        writer.scale_weights = Path(scale_weights) if scale_weights is not None else None
        described = describe_slides(
            paths,
            pipeline,
            recipe,
            base_magnification,
            min_tissue_fraction,
            progress,
            timer,
            references=writer.scale_weights is not None,
            local=local,
            skipped=skipped,
        )
        if not described:
            assert skipped
            raise _nothing_left(skipped)
        summaries, manifest = write_new_bundle(writer, recipe, pipeline, described, timer, local)
    return _report(out, manifest, summaries, [], [], start, timer, skipped)


def local_stage_for(
    recipe: Recipe,
    weights: str | os.PathLike[str] | None,
    local_weights: str | os.PathLike[str] | None,
    device: str | None,
) -> tuple[Recipe, LocalStage | None]:
    """The recipe as the bundle records it and its local stage (None without local
    features). `local_weights` adds the default [local] section to a recipe without one;
    a recipe whose descriptor is `delf` shares the descriptor's weights by default."""
    if local_weights is not None and recipe.local is None:
        recipe = recipe.model_copy(update={"local": LocalConfig()})
    if recipe.local is None:
        return recipe, None
    if local_weights is None and recipe.descriptor.name == "delf":
        local_weights = weights
    path = Path(local_weights) if local_weights is not None else None
    return recipe, LocalStage(recipe.local, path, device)


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
    summaries, xb, ids = _store_slides(writer.meta, pipeline, described, 1, timer, local, rows)
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


def _report(
    out: str | os.PathLike[str],
    manifest: Manifest,
    added: list[SlideSummary],
    replaced: list[str],
    removed: list[str],
    start: float,
    timer: StageTimer,
    skipped: list[SkippedSlide] | None = None,
) -> IndexReport:
    return IndexReport(
        bundle=str(out),
        recipe=manifest.recipe.name,
        added=added,
        replaced=replaced,
        removed=removed,
        slides_total=manifest.counts.slides,
        tiles_total=manifest.counts.tiles,
        index_kind=manifest.index_kind,
        seconds=round(time.perf_counter() - start, 4),
        stage_seconds=timer.as_dict(),
        skipped=skipped or [],
    )


def _code_params(encoder: ComponentConfig) -> tuple[str, dict[str, object]]:
    """An encoder's name and the parameters that shape its codes: a threshold recipe's
    `bits` only checks the weights (bundles built before it was stated lack it)."""
    params = dict(encoder.params)
    if encoder.name == "threshold":
        params.pop("bits", None)
    return encoder.name, params


def _check_recipe(bundle_recipe: Recipe, recipe: str | Recipe | None, out: object) -> None:
    if recipe is None:
        return
    wanted = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if wanted.name != bundle_recipe.name:
        raise BundleMismatchError(
            f"{out}: bundle was built with recipe {bundle_recipe.name!r}, not {wanted.name!r}"
        )
    if (wanted.descriptor, _code_params(wanted.encoder)) != (
        bundle_recipe.descriptor,
        _code_params(bundle_recipe.encoder),
    ):
        raise BundleMismatchError(
            f"{out}: bundle's {bundle_recipe.name!r} has other descriptor or encoder "
            f"parameters than the recipe file {wanted.name!r}"
        )


def _rebuild_if_needed(index: TileIndex, meta: MetadataStore, pipeline: TilePipeline) -> TileIndex:
    """Switch an exact binary index that has grown past the IVF threshold to a trained IVF."""
    cfg = pipeline.recipe.index
    if index.kind != "flat" or index.ntotal < cfg.ivf_threshold:
        return index
    grids = list(meta.all_grids())
    xb = np.concatenate([g.codes[g.valid] for g in grids])
    ids = np.concatenate([g.ids[g.valid] for g in grids])
    return build_tile_index(pipeline.encoder_spec, cfg, xb, ids)


def add_slides(
    index_path: str | os.PathLike[str],
    slides: Sequence[str | os.PathLike[str]],
    *,
    recipe: str | Recipe | None = None,
    replace: bool = False,
    base_magnification: float | None = None,
    min_tissue_fraction: float | None = None,
    progress: Progress | None = None,
    skip_errors: bool = False,
) -> IndexReport:
    """Add slides to a bundle with its stored pipeline (no refit). A slide already present
    raises `DuplicateSlideError` unless `replace`, which re-indexes it. `skip_errors`: as
    for `build_index` (a skipped slide that was to be replaced stays as it was)."""
    start = time.perf_counter()
    timer = StageTimer()
    skipped: list[SkippedSlide] | None = [] if skip_errors else None
    paths = _unique_paths(slides, skipped)
    if not paths:
        raise _nothing_left(skipped) if skipped else CbirError("no slides given")
    with transaction(index_path, create=False) as writer:
        bundle_recipe = writer.previous.recipe
        _check_recipe(bundle_recipe, recipe, index_path)
        meta, pipeline = writer.meta, writer.pipeline
        replaced = []
        for p in paths:
            if meta.slide_id_for_path(str(p)) is not None:
                if not replace:
                    raise DuplicateSlideError(
                        f"{p}: already in {index_path} (use --replace to re-index it)"
                    )
                replaced.append(str(p))
        described = describe_slides(
            paths,
            pipeline,
            bundle_recipe,
            base_magnification,
            min_tissue_fraction,
            progress,
            timer,
            references=writer.scale_weights is not None,
            local=writer.local,
            skipped=skipped,
        )
        if not described:
            assert skipped
            raise _nothing_left(skipped)
        left_out = {s.path for s in skipped or []}
        replaced = [p for p in replaced if p not in left_out]
        index = writer.index
        labels = {r.info.path: r.labels for r in meta.slide_list() if r.info.path in replaced}
        with timer("remove"):
            _remove_slides(writer, replaced)
        rows = LocalRows()
        summaries, xb, ids = _store_slides(
            meta, pipeline, described, meta.next_slide_id(), timer, writer.local, rows
        )
        _keep_labels(meta, labels)  # a re-indexed slide keeps its labels (`cbir label`)
        with timer("add"):
            index.add(xb, ids)
            writer.index = _rebuild_if_needed(index, meta, pipeline)
            if writer.local is not None and writer.local_index is not None:
                writer.local_index.add(*rows.arrays(writer.local_index.dim))
        n_slides = len(meta.slide_list())
        with timer("commit"):
            manifest = writer.commit(
                bundle_recipe, Counts(slides=n_slides, tiles=meta.tile_count())
            )
    return _report(index_path, manifest, summaries, replaced, [], start, timer, skipped)


def _remove_slides(writer: BundleWriter, paths: Sequence[str]) -> None:
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


def _keep_labels(meta: MetadataStore, labels: dict[str, dict[str, str]]) -> None:
    """Give re-indexed slides (by path) the labels their previous records had."""
    records = [r for r in meta.slide_list() if labels.get(r.info.path)]
    with meta.env.begin(write=True) as txn:
        for r in records:
            meta.put_slide_record(txn, r.model_copy(update={"labels": labels[r.info.path]}))


def resolve_slide(meta: MetadataStore, name_or_path: str, bundle: object) -> str:
    """The stored path of a slide given by path or by file name (which must be unique)."""
    resolved = str(Path(name_or_path).resolve())
    records = meta.slide_list()
    for r in records:
        if r.info.path == resolved:
            return r.info.path
    by_name = [
        r for r in records if r.info.name == name_or_path or r.info.name == Path(name_or_path).name
    ]
    if len(by_name) == 1:
        return by_name[0].info.path
    if len(by_name) > 1:
        raise CbirError(f"{name_or_path}: several slides in {bundle} have this name; give the path")
    raise CbirError(f"{name_or_path}: not in {bundle}")


def remove_slides(index_path: str | os.PathLike[str], slides: Sequence[str]) -> IndexReport:
    """Remove slides (by path or unique file name) from a bundle, atomically."""
    start = time.perf_counter()
    timer = StageTimer()
    with transaction(index_path, create=False) as writer:
        meta = writer.meta
        stored = [resolve_slide(meta, s, index_path) for s in slides]
        with timer("remove"):
            _remove_slides(writer, stored)
        n_slides = len(meta.slide_list())
        manifest = writer.commit(
            writer.previous.recipe, Counts(slides=n_slides, tiles=meta.tile_count())
        )
    return _report(index_path, manifest, [], [], list(dict.fromkeys(stored)), start, timer)
