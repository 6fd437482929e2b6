"""Grids, super-blocks, tile cutting and the tissue mask, on in-memory slides."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.slides.array_slide import ArraySlide
from cbir.slides.sample import sample_image
from cbir.slides.tiling import (
    cut_run_tiles,
    grid_for,
    read_superblock,
    slide_magnifications,
    slide_tissue,
    superblock_side,
    superblocks,
    tissue_cells,
)
from cbir.slides.tissue import tissue_mask


@pytest.fixture(scope="module")
def slide() -> ArraySlide:
    """The 2048 x 2048 sample image as a one-level 40x slide."""
    return ArraySlide.from_array(sample_image(), magnification=40.0)


def test_magnifications_never_upsample() -> None:
    assert slide_magnifications(20.0, [5, 10, 15, 20, 25, 40]) == [5, 10, 15, 20]


def test_grid_geometry(slide: ArraySlide) -> None:
    g = grid_for(slide, 15.0, 224)
    assert g.step == pytest.approx(224 * 40 / 15)
    assert (g.rows, g.cols) == (int(2048 // g.step),) * 2
    x, y, w, h = g.rect(1, 2, 2, 3)
    assert (x, y) == (round(2 * g.step), round(g.step))
    assert (w, h) == (round(4 * g.step) + g.size - x, round(2 * g.step) + g.size - y)


def test_superblocks_cover_every_kept_cell_once(slide: ArraySlide) -> None:
    grids = [grid_for(slide, m, 224) for m in (5.0, 10.0, 15.0, 20.0, 40.0)]
    rng = np.random.default_rng(0)
    keeps = [rng.random((g.rows, g.cols)) < 0.6 for g in grids]
    seen = [np.zeros(k.shape, int) for k in keeps]
    for sb in superblocks(grids, keeps, superblock_side(grids, target=700)):
        for run in sb.runs:
            seen[run.scale][run.r0 : run.r0 + run.nrows, run.c0 : run.c0 + run.ncols] += 1
            x, y, w, h = grids[run.scale].rect(run.r0, run.c0, run.nrows, run.ncols)
            assert sb.x <= x and sb.y <= y and x + w <= sb.x + sb.w and y + h <= sb.y + sb.h
    for s, k in zip(seen, keeps, strict=True):
        assert (s[k] == 1).all()  # kept cells exactly once (others may ride along in a run)
        assert s.max() <= 1


def test_cut_tiles_equal_direct_reads(slide: ArraySlide) -> None:
    grids = [grid_for(slide, m, 224) for m in (10.0, 20.0, 40.0)]
    keeps = [np.ones((g.rows, g.cols), bool) for g in grids]
    for sb in superblocks(grids, keeps, superblock_side(grids)):
        block, ds = read_superblock(slide, sb)
        for run in sb.runs:
            g = grids[run.scale]
            tiles = cut_run_tiles(block, ds, sb, g, run)
            r, c = run.r0 + run.nrows - 1, run.c0 + run.ncols - 1  # the run's last cell
            x, y, w, h = g.rect(r, c)
            direct = slide.read_region(x, y, w, h, g.magnification)
            np.testing.assert_array_equal(tiles[-1, -1], direct)


def test_blank_image_has_no_tissue_and_stained_image_has_some(slide: ArraySlide) -> None:
    assert not tissue_mask(np.full((300, 300, 3), 240, np.uint8)).any()
    rng = np.random.default_rng(1)
    grey = rng.integers(225, 250, (300, 300, 1))
    glass = (grey + rng.integers(-3, 4, (300, 300, 3))).astype(np.uint8)  # faint colour noise
    assert tissue_mask(glass).mean() < 0.01  # uneven bare glass is not tissue
    half = np.full((300, 300, 3), 245, np.uint8)
    half[:, :150] = (180, 90, 140)  # H&E pink-purple on the left
    mask = tissue_mask(half)
    assert mask[:, :140].all() and not mask[:, 160:].any()
    tissue = slide_tissue(slide, smallest_tile=224)
    keep = tissue_cells(grid_for(slide, 40.0, 224), tissue, 0.5)
    assert 0.3 < keep.mean() < 1.0


class ThumbSlide(ArraySlide):
    """An array slide that also stores a thumbnail of a given size, all tissue-coloured."""

    stored: np.ndarray

    def stored_thumbnail(self) -> np.ndarray:
        return self.stored


def test_coarse_stored_thumbnail_is_not_used() -> None:
    image = np.full((2048, 2048, 3), 245, np.uint8)
    image[:1024] = (180, 90, 140)  # tissue in the top half only
    s = ThumbSlide.from_array(image, 40.0)
    s.stored = np.full((64, 64, 3), (180, 90, 140), np.uint8)  # claims tissue everywhere
    fine = slide_tissue(s, smallest_tile=224)  # 64 px thumbnail: 7 px per tile, too coarse
    assert fine.fractions(np.array([0]), np.array([1500]), 224, 224)[0] == 0.0
    s.stored = np.full((512, 512, 3), (180, 90, 140), np.uint8)  # 56 px per tile: used
    coarse = slide_tissue(s, smallest_tile=224)
    assert coarse.fractions(np.array([0]), np.array([1500]), 224, 224)[0] == 1.0
