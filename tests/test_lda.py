"""`cbir train lda`: a Fisher discriminant on a frozen descriptor, used by a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.descriptors import create_descriptor
from conftest import write_two_classes

runner = CliRunner()


def test_lda_on_stats_learns_two_classes_and_builds_a_bundle(
    tmp_path: Path, generated_slide: Path
) -> None:
    tiles = write_two_classes(tmp_path / "tiles", n=8, size=224)
    weights = tmp_path / "lda.pt"
    res = runner.invoke(
        app,
        ["train", "lda", "--tiles", str(tiles), "--out", str(weights),
         "--base-recipe", "stats-lsh32", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["dim"] == 1 and report["holdout_accuracy"] == 1.0
    assert report["verdict"]["learned"] is True
    d = create_descriptor("lda", tile_size=224, weights=str(weights))
    x = d.describe(np.zeros((2, 224, 224, 3), np.uint8))
    assert x.shape == (2, 1) and x.dtype == np.float32 and np.isfinite(x).all()
    res = runner.invoke(
        app,
        ["evaluate", "--tiles", str(tiles), "--recipe", "effnet-lda-flat",
         "--weights", str(weights), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    ev = json.loads(res.stdout)
    assert ev["tiles"] == 8 and ev["mean"]["map_at_10"] > 0.9  # the held-out half
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, "effnet-lda-flat", weights=weights)
    with cbir.open_index(out) as ix:
        assert ix.info().tiles > 0


def test_lda_recipe_without_weights_is_one_line(tmp_path: Path, generated_slide: Path) -> None:
    res = runner.invoke(
        app,
        ["build-index", str(generated_slide), "--out", str(tmp_path / "i"),
         "--recipe", "effnet-lda-flat"],
    )  # fmt: skip
    assert res.exit_code == 2 and "needs --weights (cbir train lda)" in res.stderr
