"""Reduced JPEG decoding (issue 13): super-blocks between pyramid levels are decoded at
1/2, 1/4 or 1/8 by libjpeg instead of decoding the finer level whole. The tiles equal
those of the full decode shrunk with INTER_AREA within a stated tolerance: mean absolute
difference <= 1 grey level and 99th percentile <= 8 (measured: 0.12 / 2 on the sample
Aperio slide, 0.42 / 3 on the benchmark slide); JPEG 2000 slides read as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
import cbir.slides.tiling as tiling
from cbir.describe import plan_slide
from cbir.recipes import load_recipe
from conftest import CMU, TCGA, needs_shared_data


def tile_differences(path: Path, mags: tuple[float, ...], monkeypatch: pytest.MonkeyPatch):
    """(downsamples used reduced / full, |tile difference| of every kept cell)."""
    base = load_recipe("stats-lsh32")
    recipe = base.model_copy(
        update={"tiling": base.tiling.model_copy(update={"magnifications": mags})}
    )
    plan = plan_slide(path, recipe, None, None)
    used, diffs = set(), []
    with cbir.open_slide(path) as slide:
        for sb in tiling.superblocks(plan.grids, plan.keeps, tiling.superblock_side(plan.grids)):
            a, ds_a = tiling.read_superblock(slide, sb)
            monkeypatch.setattr(tiling, "REDUCED_SCALES", ())
            b, ds_b = tiling.read_superblock(slide, sb)
            monkeypatch.undo()
            used.add((ds_a, ds_b))
            for run in sb.runs:
                g = plan.grids[run.scale]
                ta = tiling.cut_run_tiles(a, ds_a, sb, g, run)
                tb = tiling.cut_run_tiles(b, ds_b, sb, g, run)
                diffs.append(np.abs(ta.astype(np.int16) - tb).ravel())
    return used, np.concatenate(diffs)


@needs_shared_data
def test_aperio_jpeg_tiles_are_decoded_at_half_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """CMU-1 (Aperio, RGB JPEG tiles with shared tables, 20x, one level) at 5 and 10x:
    read at downsample 2 by DCT scaling instead of 1, within the tolerance."""
    used, d = tile_differences(CMU, (5.0, 10.0), monkeypatch)
    assert used == {(2.0, 1.0)}
    assert d.mean() <= 1.0 and np.percentile(d, 99) <= 8, (d.mean(), np.percentile(d, 99))


@needs_shared_data
def test_jpeg2000_slides_are_read_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    used, d = tile_differences(TCGA, (5.0, 10.0), monkeypatch)
    assert used == {(1.0, 1.0)} and d.max() == 0


@needs_shared_data
def test_reduced_reads_index_and_find_as_before(tmp_path: Path) -> None:
    """A 10x bundle of CMU-1 built with reduced decoding finds a 10x crop at its place."""
    base = load_recipe("stats-lsh32")
    recipe = base.model_copy(
        update={"tiling": base.tiling.model_copy(update={"magnifications": (10.0,)})}
    )
    cbir.build_index([CMU], tmp_path / "idx", recipe)
    with cbir.open_index(tmp_path / "idx") as ix:
        hit = ix.search(f"{CMU}:896,896,896,896@10x", k=1).hits[0]
    assert (hit.x, hit.y, hit.magnification) == (896, 896, 10.0)
