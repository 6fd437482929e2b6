"""Index real and generated slides; crops come back as hit 1 at their place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.errors import DuplicateSlideError
from cbir.slides import open_slide
from conftest import CMU, KIDNEY, TCGA, needs_shared_data


def crop(
    slide_path: Path, x: int, y: int, w: int, h: int, mag: float, base: float | None = None
) -> np.ndarray:
    with open_slide(slide_path, base) as s:
        return s.read_region(x, y, w, h, mag)


def full_block(
    index: cbir.Index, slide: Path, mag: float, size: int, most_structure: bool = False
) -> tuple[int, int, int, int]:
    """Level-0 (x, y, w, h) of a size x size block of indexed cells near the grid centre,
    or, with `most_structure`, the one whose pixels vary most (for a nearly blank slide)."""
    from cbir.demo import central_full_block

    sid = next(r.slide_id for r in index.slides.values() if r.info.name == slide.name)
    grid = index.grids.get(sid, mag)
    if not most_structure:
        r, c = central_full_block(grid.valid, size)
        return grid.geometry.rect(r, c, size, size)
    info = index.slides[sid].info
    blocks = [
        grid.geometry.rect(r, c, size, size)
        for r in range(grid.geometry.rows - size + 1)
        for c in range(grid.geometry.cols - size + 1)
        if grid.valid[r : r + size, c : c + size].all()
    ]
    return max(blocks, key=lambda b: crop(slide, *b, mag, info.base_magnification).std())


def assert_top_hit(
    result: cbir.SearchResult, slide: Path, x: int, y: int, mag: float, tile_px: float
) -> None:
    """Hit 1 is on `slide` at `mag`, within one tile (`tile_px` level-0 px) of (x, y)."""
    top = result.hits[0]
    assert top.slide == slide.name
    assert top.magnification == mag
    assert abs(top.x - x) <= tile_px and abs(top.y - y) <= tile_px, (top, x, y)


@pytest.fixture(scope="module")
def generated_index(
    tmp_path_factory: pytest.TempPathFactory, generated_slide: Path, second_slide: Path
) -> Path:
    out = tmp_path_factory.mktemp("idx") / "generated"
    report = cbir.build_index([generated_slide, second_slide], out, "stats-lsh32")
    assert report.slides_total == 2 and report.index_kind == "flat"
    assert report.added[0].base_magnification == 40.0  # from the mpp resolution tags
    assert report.added[0].magnification_source == "mpp"
    assert report.added[1].base_magnification == 20.0
    return out


@pytest.mark.parametrize(
    ("mag", "size", "shift"),
    [
        (20.0, 2, 0),  # 2 x 2 tiles at 20x, on the grid
        (40.0, 3, 6),  # 3 x 3 tiles at 40x, off the grid by 6 level-0 px
        (40.0, 2, 0),  # 2 x 2 tiles at 40x
        (15.0, 1, 0),  # one tile at 15x: a tile query
        (30.0, 1, 0),  # one tile at 30x
    ],
)
def test_crop_of_generated_slide_is_hit_1(
    generated_index: Path, generated_slide: Path, mag: float, size: int, shift: int
) -> None:
    with cbir.open_index(generated_index) as index:
        x, y, w, h = full_block(index, generated_slide, mag, size)
        image = crop(generated_slide, x + shift, y + shift, w, h, mag)
        result = index.search(image, k=5)
    assert (result.query_rows, result.query_cols) == (size, size)
    assert_top_hit(result, generated_slide, x, y, mag, tile_px=224 * 40 / mag)
    if shift == 0 and (40 / mag).is_integer():  # other ratios resample a little differently
        assert result.hits[0].distance == 0.0 and (result.hits[0].x, result.hits[0].y) == (x, y)


def test_region_string_and_region_model_agree(generated_index: Path, generated_slide: Path) -> None:
    with cbir.open_index(generated_index) as index:
        x, y, w, h = full_block(index, generated_slide, 20.0, 2)
        text = f"{generated_slide}:{x},{y},{w},{h}@20x"
        a = index.search(text, k=3)
        b = index.search(cbir.Region.parse(text), k=3)
    assert a.hits == b.hits
    assert a.hits[0].distance == 0.0 and (a.hits[0].x, a.hits[0].y) == (x, y)
    assert (a.hits[0].w, a.hits[0].h) == (w, h) == (896, 896)


def test_region_hits_do_not_overlap_on_one_slide_and_magnification(
    generated_index: Path, generated_slide: Path
) -> None:
    with cbir.open_index(generated_index) as index:
        hits = index.search(f"{generated_slide}:896,448,896,896@20x", k=10).hits
    for i, a in enumerate(hits):
        for b in hits[i + 1 :]:
            if (a.slide_id, a.magnification) == (b.slide_id, b.magnification):
                assert abs(a.row - b.row) >= 2 or abs(a.col - b.col) >= 2
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_add_remove_and_duplicates(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    out = tmp_path / "idx"
    first = cbir.build_index([generated_slide], out)
    added = cbir.add_slides(out, [second_slide])
    assert added.slides_total == 2
    assert added.tiles_total == first.tiles_total + added.added[0].tiles
    with pytest.raises(DuplicateSlideError, match="already in"):
        cbir.add_slides(out, [second_slide])
    replaced = cbir.add_slides(out, [second_slide], replace=True)
    assert replaced.replaced == [str(second_slide.resolve())]
    assert replaced.tiles_total == added.tiles_total
    removed = cbir.remove_slides(out, [second_slide.name])
    assert removed.tiles_total == first.tiles_total and removed.slides_total == 1
    with cbir.open_index(out) as index:
        image = crop(second_slide, 0, 0, 896, 896, 10.0)
        assert all(h.slide == generated_slide.name for h in index.search(image, k=10).hits)
        assert index.bundle.index.ntotal == first.tiles_total


@needs_shared_data
def test_real_slides_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "real"
    report = cbir.build_index([CMU, TCGA], out, "stats-lsh32")
    by_name = {s.name: s for s in report.added}
    assert by_name[CMU.name].magnification_source == "objective-power"
    assert by_name[TCGA.name].magnification_source == "default"  # no mpp/objective power
    # The kidney TIFF is a non-pyramidal image OpenSlide refuses; PIL reads it. It is
    # almost bare glass, so it is indexed with every tile (--min-tissue 0).
    kidney = cbir.add_slides(out, [KIDNEY], min_tissue_fraction=0.0)
    assert kidney.added[0].tiles > 0 and kidney.slides_total == 3
    cases = [  # slide, magnification, tiles per side, shift (level-0 px), base
        (CMU, 20.0, 2, 0, None),
        (CMU, 10.0, 2, 0, None),
        (CMU, 20.0, 1, 0, None),
        (TCGA, 20.0, 3, 6, 20.0),
        (TCGA, 15.0, 2, 0, 20.0),
        (TCGA, 20.0, 1, 0, 20.0),
        (KIDNEY, 20.0, 2, 0, 20.0),  # nearly blank glass: query its one speck of structure
    ]
    with cbir.open_index(out) as index:
        for slide, mag, size, shift, base in cases:
            x, y, w, h = full_block(index, slide, mag, size, most_structure=slide == KIDNEY)
            result = index.search(crop(slide, x + shift, y + shift, w, h, mag, base), k=5)
            assert_top_hit(result, slide, x, y, mag, tile_px=224 * 20 / mag)
        x, y, w, h = full_block(index, CMU, 20.0, 2)
        region = index.search(f"{CMU}:{x},{y},{w},{h}@20x", k=3)
        assert region.hits[0].distance == 0.0
