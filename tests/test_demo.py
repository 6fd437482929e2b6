"""`cbir demo`, the main job of the README: the sample slide indexed with the best
pretrained recipe, a non-square rectangle off the tile grid found at its place."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.demo import QUERY_SIZE
from cbir.nn.efficientnet import packaged_lite0_weights


def test_demo_finds_an_off_grid_rectangle_with_its_extent(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--json"])
    assert res.exit_code == 0, res.stderr
    demo = json.loads(res.stdout)
    assert demo["recipe"] == ("effnet-flat" if packaged_lite0_weights() else "stats-lsh32")
    assert demo["found_at_rank_1"] and demo["iou"] >= 0.5
    hit = demo["result"]["hits"][0]
    assert (hit["w"], hit["h"]) == (demo["expected_w"], demo["expected_h"])
    assert demo["expected_w"] == 2 * QUERY_SIZE[0]  # 20x of a 40x slide
    assert demo["expected_w"] != demo["expected_h"]  # not square
    assert demo["expected_x"] % 224 and demo["expected_y"] % 224  # off the grid
