"""Synthetic described slides, for benchmarks and tests that store made-up descriptors
through the real bundle code: one grid at one magnification, 224 px tiles, no file."""

from __future__ import annotations

import numpy as np

from cbir.describe import DescribedScale, DescribedSlide
from cbir.slides.base import SlideInfo
from cbir.slides.tiling import GridGeometry

TILE = 224


def synthetic_slide(
    name: str, keep: np.ndarray, x: np.ndarray, magnification: float = 20.0
) -> DescribedSlide:
    """Slide `name` (at /synthetic/<name>): keep (rows, cols) bool cells indexed, described
    by x (n_kept, d) float32 row-major; 0.5 um/px, base magnification `magnification`."""
    rows, cols = keep.shape
    geometry = GridGeometry(
        magnification=magnification, rows=rows, cols=cols, step=float(TILE), tile_size=TILE
    )
    info = SlideInfo(
        path=f"/synthetic/{name}",
        name=name,
        backend="synthetic",
        width=cols * TILE,
        height=rows * TILE,
        level_count=1,
        base_magnification=magnification,
        magnification_source="synthetic",
        mpp=0.5,
    )
    return DescribedSlide(info, f"synthetic-{name}", 0.0, [DescribedScale(geometry, keep, x)])
