"""Exports a person can open: crops at the hit's magnification, montage, a self-contained
HTML report, QuPath GeoJSON; atomic writes; hits that read back at their size."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.export import ExportError, export_result, is_export
from cbir.slides import SlideInfo
from cbir.slides.tiling import GridGeometry
from conftest import CMU, TCGA, needs_shared_data, tree_digest

runner = CliRunner()


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cbir: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, generated_slide: Path, second_slide: Path
) -> Path:
    """The generated slide (40x) and its rotated copy (20x)."""
    out = tmp_path_factory.mktemp("export") / "idx"
    cbir.build_index([generated_slide, second_slide], out, "stats-lsh32")
    return out


def _infos(ix: cbir.Index) -> dict[int, SlideInfo]:
    return {sid: r.info for sid, r in ix.slides.items()}


@pytest.mark.parametrize(("base", "mag"), [(20.0, 15.0), (40.0, 15.0), (40.0, 30.0), (20.0, 5.0)])
def test_region_rectangles_read_back_at_their_size_in_output_px(base: float, mag: float) -> None:
    step = 224 * base / mag
    g = GridGeometry(magnification=mag, rows=40, cols=40, step=step, tile_size=224)
    for r in range(0, 30, 7):
        for c in range(1, 30, 5):
            for m, n in [(1, 1), (2, 3), (3, 3), (4, 2)]:
                x, y, w, h = g.tiles_rect(r, c, m, n)
                assert (x, y) == (round(c * step), round(r * step))
                assert round(w * mag / base) == n * 224 and round(h * mag / base) == m * 224


def test_a_15x_hit_on_a_20x_slide_reads_back_as_the_hits_tiles(
    bundle: Path, second_slide: Path
) -> None:
    """The issue's case: 3 x 3 tiles at 15x of a 20x slide are 896 level-0 px (not 897)
    and read back, through the public cbir.open_slide, as 672 x 672 px."""
    with cbir.open_index(bundle) as ix:
        result = ix.search(f"{second_slide}:597,597,896,896@15x", k=6, scale="15x")
    assert result.hits and all(h.magnification == 15.0 for h in result.hits)
    for hit in result.hits:
        assert (hit.w, hit.h) == (896, 896)
        with cbir.open_slide(hit.slide_path) as slide:
            pixels = slide.read_region(hit.x, hit.y, hit.w, hit.h, hit.magnification)
        assert pixels.shape == (hit.rows * 224, hit.cols * 224, 3)


def test_export_writes_crops_montage_report_and_qupath_geojson(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    region = f"{generated_slide}:448,448,896,896@20x"
    with cbir.open_index(bundle) as ix:
        result = ix.search(region, k=5)
        image, _ = ix.query_image(region)
        report = export_result(
            result, image, tmp_path / "out", _infos(ix), cbir.Region.parse(region)
        )
    out = tmp_path / "out"
    assert is_export(out) and report.crops == len(result.hits) == 5 and not report.missing
    assert np.array_equal(np.asarray(Image.open(out / "query.png")), image)
    crops = sorted((out / "hits").glob("*.png"))
    assert [p.name[:2] for p in crops] == ["01", "02", "03", "04", "05"]
    for hit, path in zip(result.hits, crops, strict=True):
        assert f"-{hit.magnification:g}x" in path.name
        with cbir.open_slide(hit.slide_path) as slide:
            expected = slide.read_region(hit.x, hit.y, hit.w, hit.h, hit.magnification)
        crop = np.asarray(Image.open(path))
        assert crop.shape == (hit.rows * 224, hit.cols * 224, 3)
        assert np.array_equal(crop, expected)
    montage = Image.open(out / "montage.png")
    assert montage.width >= 6 * 256 and montage.height > 256  # query + 5 hits, captions
    html = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 6 and all(s.startswith("data:image/") for s in sources)
    assert "http://" not in html and "https://" not in html  # opens offline
    for hit in result.hits:
        assert f'<td class="x">{hit.x}</td>' in html
    # GeoJSON: one FeatureCollection per slide with hits (plus the query's slide)
    collections = {p.name: json.loads(p.read_text()) for p in (out / "geojson").iterdir()}
    slides_with_hits = {Path(h.slide_path).stem for h in result.hits}
    assert {Path(n).stem for n in collections} == slides_with_hits | {generated_slide.stem}
    features = [f for fc in collections.values() for f in fc["features"]]
    assert all(fc["type"] == "FeatureCollection" for fc in collections.values())
    hits = [f for f in features if f["properties"]["classification"]["name"] == "cbir hit"]
    assert len(hits) == 5
    for f, hit in zip(
        sorted(hits, key=lambda f: f["properties"]["rank"]), result.hits, strict=True
    ):
        p = f["properties"]
        assert p["objectType"] == "annotation" and p["rank"] == hit.rank
        assert p["distance"] == hit.distance and p["similarity"] == hit.similarity
        assert p["magnification"] == hit.magnification
        assert p["measurements"]["similarity"] == hit.similarity
        x, y, w, h = hit.x, hit.y, hit.w, hit.h
        assert f["geometry"] == {
            "type": "Polygon",
            "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]],
        }
    query = [f for f in features if f["properties"]["classification"]["name"] == "cbir query"]
    assert len(query) == 1 and query[0]["geometry"]["coordinates"][0][0] == [448, 448]


def test_cli_export_replaces_a_previous_export_and_refuses_other_folders(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    region = f"{generated_slide}:448,448,896,896@20x"
    out = tmp_path / "out"
    code, _, stderr = run("search", bundle, "--region", region, "-k", "4", "--export", out)
    assert code == 0, stderr
    assert len(list((out / "hits").iterdir())) == 4
    code, _, stderr = run("search", bundle, "--region", region, "-k", "2", "--export", out)
    assert code == 0, stderr
    assert len(list((out / "hits").iterdir())) == 2  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging leftovers
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    code, _, stderr = run("search", bundle, "--region", region, "--export", other)
    assert code == 2
    assert "not empty and is not a cbir export" in one_error_line(stderr)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
    (tmp_path / "a-file").write_text("x")
    code, _, stderr = run("search", bundle, "--region", region, "--export", tmp_path / "a-file")
    assert code == 2 and "is not a directory" in one_error_line(stderr)


def test_a_failed_export_leaves_the_previous_one_as_it_was(
    bundle: Path, generated_slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    region = f"{generated_slide}:448,448,896,896@20x"
    out = tmp_path / "out"
    with cbir.open_index(bundle) as ix:
        result = ix.search(region, k=3)
        image, _ = ix.query_image(region)
        export_result(result, image, out, _infos(ix))
        before = tree_digest(out)

        def broken(*args: object, **kwargs: object) -> str:
            raise OSError("disk full")

        monkeypatch.setattr("cbir.export.write.report_html", broken)
        with pytest.raises(OSError, match="disk full"):
            export_result(result.model_copy(update={"hits": result.hits[:1]}), image, out)
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(ExportError, match="not empty"):
        export_result(result, image, tmp_path)  # holds "out": not an export itself


def test_a_moved_slide_still_exports_what_it_can(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    gone = tmp_path / "moved.tif"
    shutil.copyfile(second_slide, gone)
    out = tmp_path / "idx"
    cbir.build_index([generated_slide, gone], out, "stats-lsh32")
    gone.unlink()
    code, stdout, stderr = run(
        "search", out, "--region", f"{generated_slide}:448,448,896,896@20x", "-k", "8",
        "--export", tmp_path / "exp", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result = cbir.SearchResult.model_validate_json(stdout)
    on_gone = [h for h in result.hits if h.slide == "moved.tif"]
    assert on_gone, "the test needs hits on the moved slide"
    warnings = [line for line in stderr.splitlines() if "crop not written" in line]
    assert len(warnings) == len(on_gone) and all("moved.tif" in w for w in warnings)
    assert len(list((tmp_path / "exp" / "hits").iterdir())) == len(result.hits) - len(on_gone)
    assert "no such file" in (tmp_path / "exp" / "report.html").read_text()
    assert (tmp_path / "exp" / "montage.png").is_file()


@needs_shared_data
def test_export_of_real_slides_at_15x(tmp_path: Path) -> None:
    """CMU-1 and the TCGA slide are 20x: 15x hits of 3 x 3 tiles come back 672 px."""
    out = tmp_path / "idx"
    cbir.build_index([CMU, TCGA], out, "stats-lsh32")
    code, stdout, stderr = run(
        "search", out, "--region", f"{CMU}:896,896,896,896@15x", "-k", "5",
        "--exclude-query-slide", "--export", tmp_path / "exp", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result = json.loads(stdout)
    assert len(result["hits"]) == 5 and {h["slide"] for h in result["hits"]} == {TCGA.name}
    for hit in result["hits"]:
        scale = hit["magnification"] / 20.0
        assert (round(hit["w"] * scale), round(hit["h"] * scale)) == (672, 672)
    for path in (tmp_path / "exp" / "hits").iterdir():
        assert Image.open(path).size == (672, 672)
    geo = sorted(p.name for p in (tmp_path / "exp" / "geojson").iterdir())
    assert geo == ["cmu-1-small-region.geojson", "tcga-cr-7395-01a-01-ts1.geojson"]


def test_export_api_takes_a_slide_name_and_refuses_what_it_cannot_write(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    """export_result with a Region naming its slide by file name (as Index.search takes
    it) writes one GeoJSON for that slide, query and hits (it wrote two: one of the
    name); a slide search's result or a float image is one ExportError."""
    region = cbir.Region.parse(f"{generated_slide.name}:448,448,896,896@20x")
    with cbir.open_index(bundle) as ix:
        result = ix.search(region, k=3, slides=[generated_slide.name])
        image, _ = ix.query_image(region)
        export_result(result, image, tmp_path / "out", _infos(ix), region)
        slide_result = ix.search_slide(generated_slide.name, k=1)
    files = sorted(p.name for p in (tmp_path / "out" / "geojson").iterdir())
    assert files == ["generated.geojson"], files
    features = json.loads((tmp_path / "out" / "geojson" / files[0]).read_text())["features"]
    assert len(features) == 1 + len(result.hits)  # the query's rectangle and each hit
    with pytest.raises(ExportError, match="not of a SlideSearchResult"):
        export_result(slide_result, image, tmp_path / "o2")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match=r"float32 .*expected \(h, w, 3\) uint8"):
        export_result(result, image.astype(np.float32), tmp_path / "o3")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
