"""Junk queries are refused with their reason; real tissue of every slide is searched.
The junk is made here from real tiles: blurred, noise, pen strokes on glass, inverted,
and spots on black (fluorescence-like)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import QueryError
from cbir.search.junk import JUNK_CHECKS, check_not_junk, first_refusal, measure_all
from cbir.slides import open_slide
from cbir.slides.tissue import tissue_mask
from conftest import CMU, KIDNEY, TCGA, needs_shared_data, sample_image

runner = CliRunner()
T = 224


def tissue_tiles(image: np.ndarray, min_tissue: float = 0.5) -> list[np.ndarray]:
    """Every T x T tile of (h, w, 3) `image` with at least `min_tissue` tissue."""
    out = []
    for y in range(0, image.shape[0] - T + 1, T):
        for x in range(0, image.shape[1] - T + 1, T):
            tile = image[y : y + T, x : x + T]
            if tissue_mask(tile).mean() >= min_tissue:
                out.append(tile)
    return out


def slide_tiles(path: Path, mag: float, side: int = 3000) -> list[np.ndarray]:
    """Tissue tiles of a central side x side px window of a slide at `mag`."""
    with open_slide(path) as s:
        per = s.info.base_magnification / mag
        w, h = s.dimensions
        rw, rh = min(w, round(side * per)), min(h, round(side * per))
        return tissue_tiles(s.read_region((w - rw) // 2, (h - rh) // 2, rw, rh, mag))


def refused_by(image: np.ndarray) -> str | None:
    """The first check that refuses the image, or None."""
    refusal = first_refusal(image)
    return None if refusal is None else refusal[0].name


def glass(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(238, 3, (T, T, 3)), 0, 255).astype(np.uint8)


def pen_strokes(rng: np.random.Generator, colour: tuple[int, int, int]) -> np.ndarray:
    """Six thick strokes of one ink on glass: about a quarter to a third of the image."""
    image = glass(rng)
    for _ in range(6):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, T, 4))
        cv2.line(image, (x0, y0), (x1, y1), colour, 18, lineType=cv2.LINE_AA)
    return image


def spots_on_black(rng: np.random.Generator) -> np.ndarray:
    """A fluorescence-like field: blurred green and blue nuclei on black."""
    image = np.zeros((T, T, 3), np.uint8)
    for _ in range(40):
        cx, cy = (int(v) for v in rng.integers(0, T, 2))
        colour = (0, int(rng.integers(120, 256)), int(rng.integers(0, 200)))
        cv2.circle(image, (cx, cy), int(rng.integers(4, 12)), colour, -1)
    return cv2.GaussianBlur(image, (0, 0), 2)


def junk_set(
    tiles: list[np.ndarray], he_tiles: list[np.ndarray]
) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (the check expected to refuse it, image), made from real tiles."""
    rng = np.random.default_rng(0)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for i, tile in enumerate(tiles[:: max(1, len(tiles) // 4)][:4]):
        out[f"blurred-{i}"] = ("blur", cv2.GaussianBlur(tile, (0, 0), 10))
        noisy = rng.normal(128, 60, tile.shape)
        out[f"gaussian-noise-{i}"] = ("noise", np.clip(noisy, 0, 255).astype(np.uint8))
    out["uniform-noise"] = ("noise", rng.integers(0, 256, (T, 2 * T, 3), dtype=np.uint8))
    for name, colour in {"blue": (30, 60, 200), "green": (20, 150, 60), "black": (25, 25, 30),
                         "red": (210, 30, 40)}.items():  # fmt: skip
        out[f"pen-{name}"] = ("pen", pen_strokes(rng, colour))
    for i in range(3):
        out[f"spots-on-black-{i}"] = ("dark", spots_on_black(rng))
    for i, tile in enumerate(he_tiles[:: max(1, len(he_tiles) // 4)][:4]):
        out[f"inverted-he-{i}"] = ("green", 255 - tile)  # dark or green-dominant
    return out


def test_junk_made_from_the_sample_is_refused_and_the_sample_is_not() -> None:
    tiles = tissue_tiles(sample_image())
    assert len(tiles) > 20
    for i, tile in enumerate(tiles):
        assert refused_by(tile) is None, (i, measure_all(tile))
    for name, (check, image) in junk_set(tiles, []).items():
        assert refused_by(image) is not None, (name, measure_all(image))
        with pytest.raises(QueryError, match=re.escape(JUNK_CHECKS[refused_by(image)].reason)):
            check_not_junk(image, name)
        assert refused_by(image) == check or check == "pen", (name, measure_all(image))


@needs_shared_data
def test_every_shared_slide_is_accepted_and_its_junk_refused() -> None:
    tiles: dict[str, list[np.ndarray]] = {}
    for path in (CMU, TCGA, KIDNEY):
        for mag in (5.0, 10.0, 20.0):
            tiles[f"{path.name}@{mag:g}x"] = slide_tiles(path, mag)
    assert sum(len(v) for v in tiles.values()) > 200  # kidney-48-5 has no tissue tile
    for where, found in tiles.items():
        for i, tile in enumerate(found):
            assert refused_by(tile) is None, (where, i, measure_all(tile))
    he = tiles[f"{CMU.name}@20x"] + tiles[f"{TCGA.name}@20x"]
    for name, (_, image) in junk_set(he, he).items():
        assert refused_by(image) is not None, (name, measure_all(image))
    for tile in he:  # every inverted H&E tile, not only the set's four
        assert refused_by(255 - tile) in ("green", "dark"), measure_all(255 - tile)


@pytest.fixture(scope="module")
def stats_index(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("junk") / "idx"
    cbir.build_index([generated_slide], out, "stats-lsh32")
    return out


def test_refused_in_one_line_with_json_and_searched_on_request(
    stats_index: Path, tmp_path: Path
) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    res = runner.invoke(app, ["search", str(stats_index), str(path)])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "noise, not an image" in lines[0]
    assert "noise.png" in lines[0]
    res = runner.invoke(app, ["search", str(stats_index), str(path), "--json"])
    out = json.loads(res.stdout)
    assert res.exit_code == 2 and out["query"] == str(path) and "noise" in out["error"]
    res = runner.invoke(app, ["search", str(stats_index), str(path), "--allow-background"])
    assert res.exit_code == 0, res.stderr
    with cbir.open_index(stats_index) as ix:
        with pytest.raises(QueryError, match="noise"):
            ix.search(noise)
        assert ix.search(noise, allow_background=True, k=2).hits


def test_refused_over_http(stats_index: Path) -> None:
    from fastapi.testclient import TestClient

    from cbir.serve.app import create_app

    blurred = cv2.GaussianBlur(tissue_tiles(sample_image())[0], (0, 0), 10)
    buf = cv2.imencode(".png", blurred[..., ::-1])[1].tobytes()
    with TestClient(create_app(stats_index)) as client:
        res = client.post("/search", files={"image": ("b.png", buf, "image/png")})
        assert res.status_code == 400 and "out of focus" in res.json()["detail"]


def test_every_refused_single_query_prints_one_json_object(
    stats_index: Path, tmp_path: Path, generated_slide: Path
) -> None:
    """Whatever refuses a single query under --json (an unreadable file, a missing one, a
    malformed region, an unknown slide filter), stdout has one {"query", "error"} object
    and the exit code is 2; before, only refusals of the search itself printed one."""
    text = tmp_path / "text.png"
    text.write_text("hi")
    tissue = tmp_path / "q.png"
    Image.fromarray(np.full((224, 224, 3), (200, 100, 150), np.uint8)).save(tissue)
    cases = [
        ([str(text)], str(text), "unreadable"),
        ([str(tmp_path / "none.png")], str(tmp_path / "none.png"), "no such file"),
        (["--region", f"{generated_slide}:1,2,3"], f"{generated_slide}:1,2,3", "not a region"),
        ([str(tissue), "--slides", "nosuch.tif"], str(tissue), "nosuch.tif: not a slide of"),
    ]
    for argv, query, words in cases:
        res = runner.invoke(app, ["search", str(stats_index), *argv, "--json"])
        out = json.loads(res.stdout)
        assert res.exit_code == 2 and out["query"] == query, (argv, res.stdout)
        assert set(out) == {"query", "error"} and words in out["error"], (argv, out)


def test_a_greyscale_tissue_image_is_told_why(stats_index: Path, tmp_path: Path) -> None:
    """Tissue is found by its stain's colour: a greyscale photo of tissue is refused with
    that reason, not only "no tissue"."""
    from cbir.slides.sample import sample_image

    grey = sample_image()[500:900, 500:900].mean(axis=2).astype(np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    res = runner.invoke(app, ["search", str(stats_index), str(path)])
    assert res.exit_code == 2 and "a greyscale image: tissue is told by its stain" in res.stderr
