"""Regressions for problems found in review: magnification values, image modes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import QueryError
from cbir.recipes import TilingConfig
from cbir.search.query import MAX_QUERY_TILES, query_tiles
from cbir.slides.open import decode_image, snap_magnification

runner = CliRunner()


def test_magnifications_are_unique_sorted_and_float32() -> None:
    cfg = TilingConfig(magnifications=(20, 5, 20.0000001, 12.6))
    assert cfg.magnifications == (5.0, float(np.float32(12.6)), 20.0)
    with pytest.raises(ValueError, match="> 0"):
        TilingConfig(magnifications=(0, 20))


def test_repeated_and_inexact_magnifications_index_and_search(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    out = tmp_path / "idx"
    result = runner.invoke(
        app,
        [
            "build-index",
            str(generated_slide),
            str(second_slide),
            "--out",
            str(out),
            "--magnifications",
            "12.6,20,20",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["added"][0]["tiles_per_magnification"]) == {"12.6x", "20x"}
    cbir.remove_slides(out, [second_slide.name])
    with cbir.open_index(out) as index:
        assert (
            index.bundle.index.ntotal
            == index.bundle.meta.tile_count()
            == report["added"][0]["tiles"]
        )
        hits = index.search(f"{generated_slide}:0,0,711,711@12.6x", k=3, scale="12.6x").hits
        assert hits and all(h.magnification == float(np.float32(12.6)) for h in hits)
    code = runner.invoke(
        app,
        [
            "build-index",
            str(generated_slide),
            "--out",
            str(tmp_path / "z"),
            "--magnifications",
            "0,20",
        ],
    )
    assert code.exit_code == 2 and "must be a finite number > 0" in code.stderr


def test_mpp_snaps_to_the_objective() -> None:
    assert snap_magnification(10 / 0.2527) == 40.0
    assert snap_magnification(10 / 0.499) == 20.0
    assert snap_magnification(33.0) == 33.0  # not near a standard objective


def test_sixteen_bit_and_transparent_images(tmp_path: Path) -> None:
    ramp = np.arange(256, dtype=np.uint16)[None, :].repeat(8, 0) * 256
    image16 = Image.fromarray(ramp)
    assert image16.mode.startswith("I;16")
    image16.save(tmp_path / "grey16.png")
    rgb = decode_image(tmp_path / "grey16.png")
    assert rgb.shape == (8, 256, 3) and rgb[0, 0, 0] == 0
    assert rgb[0, 255, 0] == 254  # 65280 / 65535 * 255
    assert len(np.unique(rgb)) > 200  # a ramp, not clipped to white
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    assert (decode_image(tmp_path / "clear.png") == 255).all()  # composited onto white


def test_oversized_region_query_is_refused() -> None:
    side = int(np.sqrt(MAX_QUERY_TILES)) + 1
    with pytest.raises(QueryError, match="at most"):
        query_tiles(np.zeros((224 * side, 224 * side, 3), np.uint8), 224, "big.png")


def test_output_path_under_a_file_is_one_line(tmp_path: Path, generated_slide: Path) -> None:
    result = runner.invoke(
        app, ["build-index", str(generated_slide), "--out", str(generated_slide / "sub")]
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("cbir: error:")


def test_overwrite_repairs_a_broken_bundle(tmp_path: Path, generated_slide: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    (out / "manifest.json").write_text("[1]")
    with pytest.raises(cbir.CbirError, match="not a manifest"):
        cbir.open_index(out)
    cbir.build_index([generated_slide], out, overwrite=True)
    with cbir.open_index(out) as index:
        assert len(index.slides) == 1
