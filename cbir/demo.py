"""The main job on an embedded default: write the sample slide, index it, search a crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel

from cbir.api import open_index
from cbir.indexer import IndexReport, build_index
from cbir.progress import Progress
from cbir.search.hits import SearchResult
from cbir.slides.sample import write_sample_slide

DEMO_MAGNIFICATION = 20.0


class DemoResult(BaseModel):
    slide: str
    index: str
    query: str
    expected_x: int
    expected_y: int
    magnification: float
    found_at_rank_1: bool
    report: IndexReport
    result: SearchResult


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
    """Index the sample slide in `workdir`, cut a 2 x 2-tile crop at 20x, search it."""
    workdir.mkdir(parents=True, exist_ok=True)
    slide = write_sample_slide(workdir / "sample-ihc.tif")
    report = build_index(
        [slide], workdir / "index", "stats-lsh32", overwrite=True, progress=progress
    )
    with open_index(workdir / "index") as index:
        grid = index.grids.get(report.added[0].slide_id, DEMO_MAGNIFICATION)
        r, c = central_full_block(grid.valid, 2)
        x, y, w, h = grid.geometry.rect(r, c, 2, 2)
        from cbir.slides import open_slide

        with open_slide(slide) as s:
            crop = s.read_region(x, y, w, h, DEMO_MAGNIFICATION)
        query = workdir / "query.png"
        Image.fromarray(crop).save(query)
        result = index.search(query, k=5)
    top = result.hits[0] if result.hits else None
    found = bool(top and top.x == x and top.y == y and top.magnification == DEMO_MAGNIFICATION)
    return DemoResult(
        slide=str(slide),
        index=str(workdir / "index"),
        query=str(query),
        expected_x=x,
        expected_y=y,
        magnification=DEMO_MAGNIFICATION,
        found_at_rank_1=found,
        report=report,
        result=result,
    )
