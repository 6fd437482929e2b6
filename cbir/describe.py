"""Describing slides: plan each slide (magnifications, tissue tiles) from a thumbnail,
then read its super-blocks and describe their tiles, on worker threads."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.delf.extract import LocalFeatures
from cbir.delf.stage import LocalStage
from cbir.errors import (
    CbirError,
    EmptyTissueError,
    SlideReadError,
)
from cbir.pipeline import TilePipeline
from cbir.progress import NoProgress, Progress
from cbir.recipes import Recipe
from cbir.slides import Slide, SlideInfo, open_slide
from cbir.slides.mosaic import SlideMosaic, ThumbnailColours, slide_mosaic
from cbir.slides.open import file_checksum
from cbir.slides.tile_batcher import GPU_READERS, gathering, gathers_for_gpu
from cbir.slides.tiling import (
    CellRun,
    GridGeometry,
    SuperBlock,
    cut_run_tiles,
    grid_for,
    read_superblock,
    slide_magnifications,
    superblock_side,
    superblocks,
    tissue_cells,
    tissue_thumbnail,
)
from cbir.slides.tissue import TissueFractions, tissue_mask
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
    mosaic: SlideMosaic | None = None  # None: chosen by place when stored

    @property
    def n_tiles(self) -> int:
        return sum(len(s.descriptors) for s in self.scales)


class SkippedSlide(BaseModel):
    """A slide left out of a build: without a tissue tile (always), or unreadable
    (`--skip-errors`)."""

    path: str
    reason: str
    no_tissue: bool = False  # no tile with tissue: nothing to index, not an error


#: How a refused unreadable slide says what would have left it out.
SKIP_HINT = "; --skip-errors leaves such slides out and indexes the rest"


class Skips(list[SkippedSlide]):
    """The slides a build leaves out, with why: a slide without a tissue tile always
    (a warning, not a failure), an unreadable one only when `unreadable` (--skip-errors);
    otherwise its error is raised, with a hint."""

    def __init__(self, unreadable: bool) -> None:
        super().__init__()
        self.unreadable = unreadable

    def keep(self, slide: SkippedSlide) -> None:
        """Leave `slide` out, or raise (CbirError) when an unreadable one may not be."""
        if not (slide.no_tissue or self.unreadable):
            raise CbirError(slide.reason + SKIP_HINT)
        self.append(slide)

    def check(self, exc: Exception) -> None:
        """Raise `exc` (SKIPPABLE) again, its own type with the hint, unless its slide may
        be left out."""
        if not (isinstance(exc, EmptyTissueError) or self.unreadable):
            raise type(exc)(str(exc) + SKIP_HINT) from None

    def take(self, path: str | os.PathLike[str], exc: Exception) -> None:
        """Leave out the slide at `path` that failed with `exc` (SKIPPABLE), or raise
        (`check`)."""
        self.check(exc)
        no_tissue = isinstance(exc, EmptyTissueError)
        self.append(SkippedSlide(path=str(path), reason=str(exc), no_tissue=no_tissue))


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
    mosaic: SlideMosaic | None = None  # the tiles a slide query searches with

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
        grids = [grid_for(slide, m, tiling.tile_size, tiling.stride) for m in mags]
        if all(g.rows == 0 or g.cols == 0 for g in grids):
            w, h = slide.dimensions
            raise EmptyTissueError(
                f"{path}: {w} x {h} px at {slide.info.base_magnification:g}x is smaller than "
                f"one {tiling.tile_size} px tile at every indexed magnification "
                f"({', '.join(f'{m:g}x' for m in mags)}); nothing to index"
            )
        with timer("tissue"):
            thumb = tissue_thumbnail(slide, smallest_tile=min(g.size for g in grids))
            tissue = TissueFractions(tissue_mask(thumb), slide.dimensions)
            keeps = [tissue_cells(g, tissue, min_tissue) for g in grids]
        with timer("mosaic"):
            mosaic = slide_mosaic(grids, keeps, ThumbnailColours(thumb, slide.dimensions))
    plan = SlidePlan(
        Path(path), slide.info, checksum, base_magnification, min_tissue, grids, keeps, mosaic
    )
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
    workers: int | None = None,
    references: bool = False,
    local: LocalStage | None = None,
) -> DescribedSlide:
    """Read and describe the tissue tiles of a planned slide (and, with `references`,
    keep sample tiles per magnification for scale detection; with `local`, extract each
    tile's local features too).

    Each level-0 super-block is read once and cut into the tiles of every magnification;
    super-blocks run on `workers` threads (decoding and resizing release the GIL; None:
    DEFAULT_WORKERS, or GPU_READERS when a GPU network's tiles are gathered).
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

        shared = getattr(pipeline.descriptor, "pooled_from", None)
        one_pass = local is not None and shared is not None and bool(shared(local))
        # a GPU network without local features: readers hand their tiles to one batcher
        # (large GPU batches); local extraction stays on the readers, as many as on a CPU
        batcher = gathering(pipeline) if local is None and gathers_for_gpu(pipeline) else None
        describe = batcher.describe if batcher is not None else pipeline.describe
        if workers is None:
            workers = GPU_READERS if batcher is not None else DEFAULT_WORKERS

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
                    x, feats = _describe_tiles(describe, local, tiles, timer, one_pass)
                    done.append((run, x, feats))
            return done

        with ThreadPoolExecutor(max_workers=workers) as pool, batcher or nullcontext():
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
    return DescribedSlide(
        plan.info, plan.checksum, plan.min_tissue_fraction, scales, refs, plan.mosaic
    )


def _describe_tiles(
    describe: Callable[[np.ndarray], np.ndarray],
    local: LocalStage | None,
    tiles: np.ndarray,
    timer: StageTimer,
    one_pass: bool,
) -> tuple[np.ndarray, list[LocalFeatures]]:
    """Descriptors (n, d) (by `describe`: the pipeline's, or a GPU batcher's) and local
    features of tiles; with `one_pass` (a delf descriptor on the local stage's own
    network) one forward pass gives both."""
    if one_pass:
        assert local is not None
        with timer("local"):
            feats, pooled = local.extract_tiles_pooled(tiles)
        if pooled is not None:
            return pooled, feats
        with timer("describe"):
            return describe(tiles), feats
    with timer("describe"):
        x = describe(tiles)
    feats: list[LocalFeatures] = []
    if local is not None:
        with timer("local"):
            feats = local.extract_tiles(tiles)
    return x, feats


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
    skipped: Skips | None = None,
    per_slide: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> list[DescribedSlide]:
    """Plan every slide first (so bad input fails before any long work), then describe.
    `references`: keep sample tiles for the scale comparator (bundles that have one).
    `skipped`: when given, a slide without tissue (and, as it says, an unreadable one) is
    listed there and left out instead of failing the whole call. `per_slide`: (base magnification,
    min tissue fraction) by path, instead of the two arguments (`cbir rebuild`)."""

    def plan(p: Path) -> SlidePlan | Exception:
        base, tissue = (per_slide or {}).get(str(p), (base_magnification, min_tissue_fraction))
        try:
            return plan_slide(p, recipe, base, tissue, timer)
        except SKIPPABLE as exc:
            if skipped is None:
                raise
            skipped.check(exc)  # an unreadable slide may fail the build: before any long work
            return exc

    with ThreadPoolExecutor(max_workers=DEFAULT_WORKERS) as pool:  # thumbnails decode in C
        planned = list(pool.map(plan, paths))
    ready = [p for p in planned if isinstance(p, SlidePlan)]
    if progress is not None:
        progress.plan(len(ready), sum(p.n_tiles for p in ready))
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
            skipped.take(path, exc)
    return described
