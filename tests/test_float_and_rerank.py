"""Float recipes (Faiss Flat / HNSW on descriptors) and two-step coarse/fine search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.index.float import FloatTileIndex
from cbir.recipes import IndexConfig, load_recipe
from cbir.search.region import region_distance, squared_l2_matrix


@pytest.mark.parametrize("recipe", ["cnn-flat", "cnn-hnsw"])
def test_float_recipe_end_to_end(
    recipe: str, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    out = tmp_path / "idx"
    report = cbir.build_index(
        [generated_slide, second_slide], out, recipe, device="cpu", untrained=True
    )
    assert report.index_kind == "float"
    region = f"{generated_slide}:896,0,896,896@20x"
    tile = f"{generated_slide}:448,224,224,224@40x"
    with cbir.open_index(out, device="cpu") as index:
        hits = index.search(region, k=3).hits
        assert (hits[0].x, hits[0].y, hits[0].magnification) == (896, 0, 20.0)
        assert hits[0].distance == pytest.approx(0.0, abs=1e-6)
        one = index.search(tile, k=5).hits
        assert (one[0].x, one[0].y, one[0].rows) == (448, 224, 1)
        assert one[0].distance == pytest.approx(0.0, abs=1e-6)
        assert [h.distance for h in one] == sorted(h.distance for h in one)
    after = cbir.remove_slides(out, [second_slide.name])  # HNSW cannot remove: rebuilt
    with cbir.open_index(out, device="cpu") as index:
        assert index.bundle.index.ntotal == after.tiles_total == report.added[0].tiles
        assert {h.slide for h in index.search(tile, k=10).hits} == {generated_slide.name}


def test_hnsw_removal_rebuilds_without_the_removed_ids() -> None:
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((500, 16)).astype(np.float32)
    ids = np.arange(500, dtype=np.int64) * 7
    index = FloatTileIndex.for_collection(16, IndexConfig(float_factory="HNSW16,Flat"), xb, ids)
    assert index.remove(ids[:50]) == 50 and index.ntotal == 450
    D, I = index.search(xb[50:60], 1)
    np.testing.assert_array_equal(I[:, 0], ids[50:60])
    _, I = index.search(xb[:50], 1)
    assert not np.isin(I, ids[:50]).any()


def test_region_distance_in_l2() -> None:
    q = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    p = np.array([[[0.0, 0.0], [3.0, 1.0]]], np.float32)
    # d_near(Q, P) = (0 + min(2, 4)) / 2 = 1 ; d_near(P, Q) = (0 + min(10, 4)) / 2 = 2
    D = region_distance(q, p, np.ones((1, 2), bool), squared_l2_matrix)
    assert D[0] == pytest.approx(3.0)


def test_two_step_search_reranks_by_l2(tmp_path: Path, generated_slide: Path) -> None:
    base = load_recipe("stats-lsh32")
    recipe = base.model_copy(
        update={
            "name": "stats-lsh32-rerank",
            "search": base.search.model_copy(update={"rerank": 50}),
        }
    )
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, recipe)
    tile = f"{generated_slide}:448,224,224,224@40x"
    with cbir.open_index(out) as index:
        hits = index.search(tile, k=10).hits
        assert (hits[0].x, hits[0].y, hits[0].distance) == (448, 224, 0.0)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        # the fine distances are squared L2 between the query's and the stored descriptors
        x, _ = index.query_codes(index.query_image(tile)[0], "q")
        stored = index.bundle.meta.vectors_of(np.array([h.tile_id for h in hits]), 12)
        expected = ((stored - x.reshape(1, -1)) ** 2).sum(1)
        np.testing.assert_allclose([h.distance for h in hits], expected, rtol=1e-4, atol=1e-6)
    cbir.build_index([generated_slide], tmp_path / "plain", "stats-lsh32")
    with cbir.open_index(tmp_path / "plain") as index:  # without rerank no vectors are kept
        assert np.isnan(index.bundle.meta.vectors_of(np.array([hits[0].tile_id]), 12)).all()
