"""DICOM WSI folders as slides: a DICOM copy of the shared CMU slide (written with
wsidicomizer) gives the same tiles as its SVS source, crops of one are found at their
place in the other, it ranks its source first as a slide query, it is one slide for
`cbir build-index` and the server, and a single instance file names its series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.describe import plan_slide
from cbir.errors import SlideReadError
from cbir.recipes import load_recipe
from cbir.search.hits import iou
from cbir.search.query import Region
from cbir.serve.app import create_app
from cbir.slides.dicom_slide import DicomSlide
from tests.conftest import CMU, TCGA, needs_shared_data

pytestmark = needs_shared_data
runner = CliRunner()


@pytest.fixture(scope="module")
def dicom_cmu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CMU slide as a DICOM WSI series (levels added down to a small overview)."""
    wsidicomizer = pytest.importorskip("wsidicomizer")
    from wsidicomizer.sources import TiffSlideSource

    out = tmp_path_factory.mktemp("dicom") / "cmu-dicom"
    out.parent.mkdir(exist_ok=True)
    wsidicomizer.WsiDicomizer.convert(
        CMU, out, preferred_source=TiffSlideSource, add_missing_levels=True
    )
    return out


@pytest.fixture(scope="module")
def svs_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("svs-idx") / "idx"
    cbir.build_index([CMU, TCGA], root, "stats-lsh32")
    return root


def test_a_dicom_folder_opens_as_its_source(dicom_cmu: Path) -> None:
    with cbir.open_slide(dicom_cmu) as d, cbir.open_slide(CMU) as s:
        assert isinstance(d, DicomSlide)
        assert d.dimensions == s.dimensions and d.info.name == "cmu-dicom"
        assert d.info.base_magnification == 20.0 and d.info.mpp == pytest.approx(0.499)
        assert len(d.level_dimensions) > 1 and d.stored_thumbnail() is not None
        a = d.read_region(800, 900, 448, 448, 20).astype(int)
        b = s.read_region(800, 900, 448, 448, 20).astype(int)
        assert np.abs(a - b).mean() < 8  # JPEG encoded again: close (5.7 here), not equal
        edge = d.read_level(0, 2100, 2900, 224, 224)  # past the edge: white
        assert edge.shape == (224, 224, 3) and (edge[-20:, -20:] == 255).all()


def test_a_dicom_folder_gives_its_sources_tiles(dicom_cmu: Path) -> None:
    recipe = load_recipe("stats-lsh32")
    d, s = plan_slide(dicom_cmu, recipe), plan_slide(CMU, recipe)
    assert abs(d.n_tiles - s.n_tiles) <= 0.05 * s.n_tiles
    for kd, ks in zip(d.keeps, s.keeps, strict=True):
        assert kd.shape == ks.shape
        assert abs(int(kd.sum()) - int(ks.sum())) <= max(1, 0.05 * ks.sum())


def test_a_crop_of_one_is_found_in_the_other(
    dicom_cmu: Path, svs_index: Path, tmp_path: Path
) -> None:
    """A crop of the DICOM copy is found at its place on the SVS, and a region of the
    SVS at its place on the DICOM copy (a place stats-lsh32 finds from the SVS itself)."""
    with cbir.open_slide(dicom_cmu) as d:
        Image.fromarray(d.read_region(1120, 1568, 672, 672, 20)).save(tmp_path / "crop.png")
    truth = Region(slide=str(CMU), x=1120, y=1568, w=672, h=672, magnification=20)
    with cbir.open_index(svs_index) as ix:
        hit = ix.search(tmp_path / "crop.png", k=1).hits[0]
    assert hit.slide == CMU.name and iou(hit, truth) >= 0.5
    root = tmp_path / "dicom-idx"
    cbir.build_index([dicom_cmu, TCGA], root, "stats-lsh32")
    with cbir.open_index(root) as ix:
        hit = ix.search(f"{CMU}:1120,1568,672,672@20x", k=1).hits[0]
    assert hit.slide == "cmu-dicom" and iou(hit, truth) >= 0.5


def test_a_dicom_copy_ranks_its_source_first(dicom_cmu: Path, svs_index: Path) -> None:
    with cbir.open_index(svs_index) as ix:
        for method in ("pooled", "median"):
            r = ix.search_slide(dicom_cmu, k=2, method=method)
            assert r.query_slide_id is None and r.hits[0].slide == CMU.name, method


def test_one_instance_names_its_series(dicom_cmu: Path) -> None:
    one = sorted(dicom_cmu.glob("*.dcm"))[0]
    with pytest.raises(SlideReadError, match=r"one instance of DICOM WSI series [\d.]+ \(") as e:
        cbir.open_slide(one)
    assert f"give the folder {dicom_cmu} as the slide" in str(e.value)


def test_cli_and_server_take_a_dicom_folder(dicom_cmu: Path, tmp_path: Path) -> None:
    """A folder holding the DICOM folder and an SVS indexes both (the DICOM folder is one
    slide); a slide query by the DICOM slide's name; the page's tiles of it."""
    top = tmp_path / "slides"
    top.mkdir()
    (top / dicom_cmu.name).symlink_to(dicom_cmu, target_is_directory=True)
    (top / TCGA.name).symlink_to(TCGA)
    root = tmp_path / "idx"
    r = runner.invoke(app, ["build-index", str(top), "-o", str(root), "--recipe", "stats-lsh32"])
    assert r.exit_code == 0, r.output
    assert "indexed cmu-dicom: 73 tiles" in r.stdout or "indexed cmu-dicom:" in r.stdout
    r = runner.invoke(app, ["search", str(root), "--slide", "cmu-dicom", "--json"])
    assert r.exit_code == 0, r.output
    with TestClient(create_app(root, device="cpu")) as client:
        slides = {s["name"]: s for s in client.get("/slides").json()}
        sid = slides["cmu-dicom"]["slide_id"]
        assert client.get(f"/slides/{sid}.dzi").status_code == 200
        tile = client.get(f"/slides/{sid}_files/12/3_4.jpeg")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
        region = client.get(
            f"/slides/{sid}/region.png",
            params={"x": 0, "y": 0, "w": 2220, "h": 2967, "magnification": 2.5, "max_side": 160},
        )
        assert region.status_code == 200


def test_add_and_export_take_a_dicom_folder(dicom_cmu: Path, tmp_path: Path) -> None:
    """`cbir add` of a DICOM folder to a bundle, and an export of a region query whose
    hits are read back from it."""
    root = tmp_path / "idx"
    r = runner.invoke(app, ["build-index", str(TCGA), "-o", str(root), "--recipe", "stats-lsh32"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["add", str(root), str(dicom_cmu), "--json"])
    assert r.exit_code == 0, r.output
    added = json.loads(r.stdout)["added"]
    assert [a["name"] for a in added] == ["cmu-dicom"] and added[0]["tiles"] == 73
    out = tmp_path / "export"
    region = f"{dicom_cmu}:448,448,896,896@20x"
    r = runner.invoke(
        app, ["search", str(root), "--region", region, "-k", "3", "--export", str(out)]
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "result.json").read_text())
    assert result["hits"][0]["slide"] == "cmu-dicom"
    crops = sorted((out / "hits").glob("01-*.png"))
    assert crops and crops[0].stat().st_size > 1000


def test_a_folder_mixing_dicom_and_other_slides_is_refused(dicom_cmu: Path, tmp_path: Path) -> None:
    """DICOM files beside slide files, or two DICOM series in one folder: refused in one
    line (the folder was read as one DICOM slide and the rest dropped without a word)."""
    import pydicom

    mixed = tmp_path / "mixed"
    shutil.copytree(dicom_cmu, mixed)
    shutil.copy(CMU, mixed / CMU.name)
    r = runner.invoke(app, ["build-index", str(mixed), "-o", str(tmp_path / "a")])
    assert r.exit_code == 2 and "holds DICOM files and other slides (" + CMU.name in r.stderr
    two = tmp_path / "two"
    shutil.copytree(dicom_cmu, two)
    series = pydicom.uid.generate_uid()  # a second series: the same levels, another UID
    for f in sorted(dicom_cmu.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(two / f"other-{f.name}")
    r = runner.invoke(app, ["build-index", str(two), "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "holds 2 DICOM WSI series" in r.stderr, r.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
