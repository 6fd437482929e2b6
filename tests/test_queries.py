"""Queries as users make them: blank queries refused, similarities in [0, 1] with
--min-similarity, evaluate on a float recipe's codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import QueryError
from cbir.slides import open_slide
from conftest import write_two_classes

runner = CliRunner()


@pytest.fixture(scope="module")
def stats_index(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("q") / "idx"
    cbir.build_index([generated_slide], out, "stats-lsh32")
    return out


def _crop(slide: Path, x: int, y: int, size: int, mag: float) -> np.ndarray:
    """size x size output px at `mag` from level-0 (x, y) of a 40x slide."""
    with open_slide(slide) as s:
        level0 = round(size * s.info.base_magnification / mag)
        return s.read_region(x, y, level0, level0, mag)


@pytest.mark.parametrize("value", [255, 0, 240])
def test_a_blank_query_is_refused_and_can_be_searched_on_request(
    stats_index: Path, value: int
) -> None:
    blank = np.full((448, 448, 3), value, np.uint8)
    with cbir.open_index(stats_index) as ix:
        with pytest.raises(QueryError, match="no tissue in the query"):
            ix.search(blank)
        assert ix.search(blank, allow_background=True, k=3).hits


def test_blank_query_on_the_cli_is_one_line_exit_2(stats_index: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "white.png"
    Image.fromarray(np.full((224, 224, 3), 255, np.uint8)).save(path)
    res = runner.invoke(app, ["search", str(stats_index), str(path)])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "no tissue" in lines[0], res.stderr
    res = runner.invoke(app, ["search", str(stats_index), str(path), "--allow-background"])
    assert res.exit_code == 0, res.stderr


def _tissue_origin(ix: cbir.Index, mag: float, size: int = 1) -> tuple[int, int]:
    """Level-0 (x, y) of a size x size block of indexed cells at `mag` (off by a third of
    a tile, so a crop there lies off the grid)."""
    from cbir.demo import central_full_block

    grid = next(iter(ix.grids.get(sid, mag) for sid in ix.slides))
    r, c = central_full_block(grid.valid, size)
    x, y, _, _ = grid.geometry.rect(r, c)
    return x + grid.geometry.size // 3, y + grid.geometry.size // 3


def test_similarity_in_unit_range_and_ordered_by_rank(
    stats_index: Path, generated_slide: Path
) -> None:
    with cbir.open_index(stats_index) as ix:
        for size in (224, 448):
            x, y = _tissue_origin(ix, 20.0, size // 224)
            result = ix.search(_crop(generated_slide, x, y, size, 20.0), k=10)
            sims = [h.similarity for h in result.hits]
            assert all(s is not None and 0.0 <= s <= 1.0 for s in sims)
            assert sims == sorted(sims, reverse=True)
            assert result.k == 10


def test_an_exact_tile_has_similarity_one(stats_index: Path, generated_slide: Path) -> None:
    with cbir.open_index(stats_index) as ix:
        grid = next(iter(ix.grids.get(sid, 20.0) for sid in ix.slides))
        r, c = np.argwhere(grid.valid)[len(np.argwhere(grid.valid)) // 2]
        x, y, _, _ = grid.geometry.rect(int(r), int(c))
        hit = ix.search(_crop(generated_slide, x, y, 224, 20.0), k=1).hits[0]
    assert hit.similarity == 1.0 and hit.distance == 0


def test_min_similarity_drops_hits_and_says_how_many(
    stats_index: Path, generated_slide: Path
) -> None:
    with cbir.open_index(stats_index) as ix:
        x, y = _tissue_origin(ix, 20.0, 2)
        query = _crop(generated_slide, x, y, 224, 20.0)
        full = ix.search(query, k=10)
        sims = [h.similarity for h in full.hits]
        cut = max(sims)
        assert min(sims) < cut
        kept = ix.search(query, k=10, min_similarity=cut)
    assert all(h.similarity >= cut for h in kept.hits)
    assert [h.rank for h in kept.hits] == list(range(1, len(kept.hits) + 1))
    assert len(kept.hits) + kept.below_min_similarity == len(full.hits)
    assert 0 < kept.below_min_similarity
    res = runner.invoke(
        app,
        [
            "search",
            str(stats_index),
            "--region",
            f"{generated_slide}:{x},{y},896,896@20x",
            "--min-similarity",
            "0.99",
        ],
    )
    assert res.exit_code == 0, res.stderr
    assert "below --min-similarity 0.99" in " ".join(res.stdout.split())


def test_evaluate_a_float_recipe_in_code_space_works(tmp_path: Path) -> None:
    tiles = write_two_classes(tmp_path / "tiles", n=6, size=224)
    argv = ["evaluate", "--tiles", str(tiles), "--recipe", "cnn-flat", "--json"]
    res = runner.invoke(app, argv)  # a learned recipe, no weights: refused as build-index does
    assert res.exit_code == 2 and "needs the weights" in res.stderr and "--untrained" in res.stderr
    res = runner.invoke(app, [*argv, "--untrained"])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert "float vectors" in report["protocol"] and "untrained" in report["protocol"]
    assert 0.0 <= report["mean"]["seed_map_at_10"] <= 1.0


def test_expand_query_by_hand() -> None:
    from cbir.search.expansion import expand_query, expanded_leave_one_out

    q = np.array([1.0, 0.0, 0.0], np.float32)
    nn = np.array([[0.0, 1.0, 0.0], [0.6, 0.8, 0.0]], np.float32)  # cos 0 and 0.6
    out = expand_query(q, nn, alpha=1.0)
    want = np.array([1.36, 0.48, 0.0]) / np.linalg.norm([1.36, 0.48, 0.0])
    np.testing.assert_allclose(out, want, rtol=1e-6)
    z = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]  # two pairs of identical vectors
    order = expanded_leave_one_out(z, 1, 3.0)
    assert order[0, 0] == 1 and order[2, 0] == 3 and order.shape == (4, 3)


def test_query_expansion_needs_unit_vectors_and_searches(
    tmp_path: Path, generated_slide: Path
) -> None:
    from cbir.recipes import ComponentConfig, SearchConfig, load_recipe

    base = load_recipe("stats-lsh32")
    unit = base.model_copy(
        update={
            "name": "stats-cosine",
            "encoder": ComponentConfig(
                name="float", params={"standardize": True, "normalize": True}
            ),
            "index": base.index.model_copy(update={"float_factory": "Flat"}),
            "search": SearchConfig(expand=3),
        }
    )
    cbir.build_index([generated_slide], tmp_path / "u", unit)
    with cbir.open_index(tmp_path / "u") as ix:
        x, y = _tissue_origin(ix, 20.0)
        query = _crop(generated_slide, x, y, 224, 20.0)
        plain, expanded = ix.search(query, k=5, expand=0), ix.search(query, k=5)
        assert len(expanded.hits) == 5 and all(0 <= h.similarity <= 1 for h in expanded.hits)
        assert [h.similarity for h in expanded.hits] == sorted(
            (h.similarity for h in expanded.hits), reverse=True
        )
        assert plain.hits[0].tile_id in {h.tile_id for h in expanded.hits}
    plain_recipe = unit.model_copy(
        update={"encoder": ComponentConfig(name="float", params={"standardize": True})}
    )
    cbir.build_index([generated_slide], tmp_path / "p", plain_recipe)
    with cbir.open_index(tmp_path / "p") as ix, pytest.raises(QueryError, match="unit"):
        ix.search(query, k=5)
