"""Retrieval metrics against hand computations, and the leave-one-out harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.errors import CbirError
from cbir.eval import (
    average_precision_at_k,
    evaluate_tiles,
    majority_vote_at_k,
    precision_at_k,
    seed_map_at_k,
)
from cbir.eval.harness import ranking
from conftest import SHARED_DATA

CRC9 = SHARED_DATA / "tiles-crc9"


def test_seed_map_by_hand() -> None:
    rel = np.array([1, 0, 1, 0], bool)
    # (1/1 + 1/3) / (1 + 1/2 + 1/3 + 1/4) = (4/3) / (25/12) = 0.64
    assert seed_map_at_k(rel, 4) == pytest.approx(0.64)
    assert seed_map_at_k(np.ones(10, bool), 10) == pytest.approx(1.0)
    assert seed_map_at_k(np.zeros(10, bool), 10) == 0.0


def test_average_precision_by_hand() -> None:
    rel = np.array([1, 0, 1, 0, 0], bool)
    # P@1 = 1, P@3 = 2/3; R = 4 relevant in the collection, min(k=5, R) = 4
    assert average_precision_at_k(rel, 5, 4) == pytest.approx((1 + 2 / 3) / 4)
    assert average_precision_at_k(rel, 5, 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(rel, 5, 0) == 0.0


def test_precision_and_majority_vote_by_hand() -> None:
    assert precision_at_k(np.array([1, 1, 0, 0, 1], bool), 5) == pytest.approx(0.6)
    assert majority_vote_at_k(["a", "b", "b", "a", "c"], 5, "a") == 1.0  # tie: a ranks first
    assert majority_vote_at_k(["b", "a", "b", "a", "b"], 5, "a") == 0.0
    assert majority_vote_at_k(["c", "c", "a", "a", "b"], 4, "a") == 0.0


def test_ranking_leaves_the_query_out_and_breaks_ties_by_index() -> None:
    codes = np.array([[0], [0], [1], [0]], np.uint8)
    order, D = ranking(codes)
    np.testing.assert_array_equal(order[0], [1, 3, 2])
    np.testing.assert_array_equal(D[0], [0, 0, 1])
    assert all(q not in order[q] for q in range(4))


def test_harness_on_generated_classes(tmp_path: Path) -> None:
    """Two visually distinct classes (flat pink vs dark striped) are retrieved perfectly."""
    rng = np.random.default_rng(0)
    for cls, make in {
        "pink": lambda: np.clip(rng.normal((230, 170, 200), 4, (224, 224, 3)), 0, 255),
        "stripes": lambda: (
            np.arange(224)[None, :, None] // 4 % 2 * 120 + rng.normal(40, 4, (224, 224, 3))
        ),
    }.items():
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(make().astype(np.uint8)).save(tmp_path / cls / f"{i}.png")
    report = evaluate_tiles(tmp_path, "stats-lsh64")
    assert report.tiles == 12 and report.classes == 2
    assert report.mean.precision_at_5 == 1.0 and report.mean.majority_vote_at_5 == 1.0
    code = CliRunner().invoke(app, ["evaluate", "--tiles", str(tmp_path), "--json"])
    assert code.exit_code == 0
    assert json.loads(code.stdout)["mean"]["seed_map_at_10"] > 0.5


def test_a_labels_file_that_is_no_labels_csv_is_named(tmp_path: Path) -> None:
    """--labels pointing at a file without a path,label header (or at bytes that are not
    text, or with a row lacking its path) is refused naming the file, not read as 0
    tiles in 0 classes."""
    from cbir.slides.tileset import load_labelled_tiles

    text, binary, short = tmp_path / "notes.png", tmp_path / "bytes.csv", tmp_path / "s.csv"
    text.write_text("hi\n")
    binary.write_bytes(b"\xcf\xff\x00\x81" * 8)
    short.write_text("path,label\na.png,x\n,y\n")
    with pytest.raises(CbirError, match="notes.png: expected a CSV with columns path,label; its"):
        load_labelled_tiles(tmp_path, text)
    with pytest.raises(CbirError, match="bytes.csv: expected a CSV with columns path,label"):
        load_labelled_tiles(tmp_path, binary)
    with pytest.raises(CbirError, match="s.csv line 3: needs a path and a label"):
        load_labelled_tiles(tmp_path, short)
    (tmp_path / "ok.csv").write_text("\ufeffPath,Label\na.png,x\nb.png,y\n")  # BOM, case
    assert load_labelled_tiles(tmp_path, tmp_path / "ok.csv").labels == ["x", "y"]
    # a repeated row is used once (it found itself, and was trained and held out at once);
    # a tile given two labels, or none, is refused; spaces after commas are not a label's
    (tmp_path / "dup.csv").write_text("path, label\na.png, x\nb.png, y\na.png, x\n")
    tiles = load_labelled_tiles(tmp_path, tmp_path / "dup.csv")
    assert tiles.labels == ["x", "y"] and len(tiles.paths) == 2
    (tmp_path / "two.csv").write_text("path,label\na.png,x\nb.png,y\na.png,y\n")
    with pytest.raises(CbirError, match=r"two.csv line 4: a.png is labelled 'x' above and 'y'"):
        load_labelled_tiles(tmp_path, tmp_path / "two.csv")
    (tmp_path / "none.csv").write_text("path,label\na.png,x\nb.png,\n")
    with pytest.raises(CbirError, match="none.csv line 3: needs a path and a label"):
        load_labelled_tiles(tmp_path, tmp_path / "none.csv")


@pytest.mark.skipif(not CRC9.is_dir(), reason=f"{CRC9} not found (no ../shared/data)")
def test_stats_on_crc9_beats_chance() -> None:
    report = evaluate_tiles(CRC9, "stats-lsh32")
    assert report.tiles == 139 and report.classes == 9
    assert report.mean.seed_map_at_10 > 2 / 9  # chance is about 1/9
