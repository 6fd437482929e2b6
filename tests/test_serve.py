"""`cbir serve`: the HTTP API (FastAPI's TestClient, in process): search by upload and by
region, hit crops, Deep Zoom, reopening after a writer, and requests that must fail."""

from __future__ import annotations

import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cbir
from cbir.slides.open import open_slide

fastapi = pytest.importorskip("fastapi", reason="cbir[serve] is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from cbir.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    root = tmp_path_factory.mktemp("serve") / "idx"
    cbir.build_index([generated_slide], root, "stats-lsh32")
    return root


@pytest.fixture()
def client(bundle: Path):  # type: ignore[no-untyped-def]
    with TestClient(create_app(bundle, device="cpu")) as c:
        yield c


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def crop(slide: Path, x: int, y: int, size: int, magnification: float) -> np.ndarray:
    with open_slide(slide) as s:
        return s.read_region(x, y, size, size, magnification)


def test_status_pages(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["recipe"] == "stats-lsh32"
    assert health["slides"] == 1 and health["generation"] >= 1
    slides = client.get("/slides").json()
    assert [s["name"] for s in slides] == ["generated.tif"] and slides[0]["dzi"] == "/slides/1.dzi"
    assert client.get("/info").json()["tiles"] > 0
    assert "/search" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "openseadragon.min.js" in page.text
    osd = client.get("/static/openseadragon/openseadragon.min.js")
    assert osd.status_code == 200 and b"openseadragon 6.1.1" in osd.content[:200]


def test_upload_finds_the_crop_at_its_place(client: TestClient, generated_slide: Path) -> None:
    tile = crop(generated_slide, 448, 224, 224, 40)
    r = client.post(
        "/search",
        files={"image": ("q.png", png_bytes(tile), "image/png")},
        data={"k": "3", "scale": "40x"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["query"] == "q.png" and len(result["hits"]) == 3
    top = result["hits"][0]
    assert (top["x"], top["y"], top["magnification"]) == (448, 224, 40.0)
    assert top["distance"] == 0 and top["similarity"] == 1.0
    # the hit's crop, read back through the API, is the query's pixels
    png = client.get(
        f"/slides/{top['slide_id']}/region.png",
        params={k: top[k] for k in ("x", "y", "w", "h", "magnification")},
    )
    assert png.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), tile)


def test_region_search_by_slide_id(client: TestClient) -> None:
    body = {"slide": 1, "x": 448, "y": 224, "w": 448, "h": 448, "magnification": 40, "k": 2}
    r = client.post("/search", json=body)
    assert r.status_code == 200, r.text
    top = r.json()["hits"][0]
    assert (top["x"], top["y"], top["w"], top["h"]) == (448, 224, 448, 448)
    # without a magnification: the highest indexed one at which it covers a tile
    r = client.post("/search", json={**body, "magnification": None})
    assert r.status_code == 200 and r.json()["query"].endswith("@40x")


def test_deep_zoom(client: TestClient, generated_slide: Path) -> None:
    xml = ET.fromstring(client.get("/slides/1.dzi").text)
    size = xml.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None
    with open_slide(generated_slide) as s:
        assert (int(size.get("Width")), int(size.get("Height"))) == s.dimensions
    top_level = 0
    while client.get(f"/slides/1_files/{top_level + 1}/0_0.jpeg").status_code == 200:
        top_level += 1
    tile = client.get(f"/slides/1_files/{top_level}/0_0.jpeg")
    assert tile.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile.content)).size == (255, 255)  # 254 + 1 overlap
    assert client.get(f"/slides/1_files/{top_level + 1}/0_0.jpeg").status_code == 404
    assert client.get("/slides/1_files/0/5_5.jpeg").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/slides/2.dzi",
        "/slides/2/region.png?x=0&y=0&w=10&h=10&magnification=10",
        "/slides/..%2F..%2Fetc%2Fpasswd.dzi",
        "/slides/1_files/0/..%2F..%2F0_0.jpeg",
        "/static/..%2F..%2Fapp.py",
        "/slides/%2Fetc%2Fpasswd/region.png?x=0&y=0&w=10&h=10&magnification=10",
    ],
)
def test_requests_cannot_name_files(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and b"root:" not in r.content


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"files": {"image": ("q.png", b"not an image", "image/png")}}, "q.png: not a readable"),
        ({"json": {"slide": 1, "x": 0, "y": 0, "w": 10, "h": 10}}, "smaller than one 224 px"),
        ({"json": {"slide": 1, "x": 0, "y": 0, "w": 0, "h": 10}}, "w: Input should be greater"),
        ({"json": {"slide": 1, "x": 0, "y": 0, "w": 9, "h": 9, "path": "/etc"}}, "path: Extra"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, "not JSON"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, "multipart/form-data"),
    ],
)
def test_bad_searches_get_one_line(client: TestClient, kwargs: dict, message: str) -> None:
    r = client.post("/search", **kwargs)
    assert r.status_code == 400 and message in r.json()["detail"]
    assert "\n" not in r.json()["detail"]


def test_blank_upload_is_refused(client: TestClient) -> None:
    white = np.full((224, 224, 3), 250, np.uint8)
    r = client.post("/search", files={"image": ("white.png", png_bytes(white), "image/png")})
    assert r.status_code == 400 and "tissue" in r.json()["detail"]


def test_region_png_limits(client: TestClient) -> None:
    ok = client.get(
        "/slides/1/region.png",
        params={"x": 0, "y": 0, "w": 896, "h": 448, "magnification": 40, "max_side": 100},
    )
    assert Image.open(io.BytesIO(ok.content)).size == (100, 50)
    outside = client.get(
        "/slides/1/region.png", params={"x": -5, "y": 0, "w": 10, "h": 10, "magnification": 40}
    )
    assert outside.status_code == 400 and "outside the slide" in outside.json()["detail"]


def test_reopens_when_a_writer_publishes(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    root = tmp_path / "idx"
    cbir.build_index([generated_slide], root, "stats-lsh32")
    with TestClient(create_app(root, device="cpu")) as c:
        before = c.get("/healthz").json()["generation"]
        # a writer in another process (the server holds the LMDB open in this one)
        add = "from cbir.cli.main import app; app()"
        cmd = [sys.executable, "-c", add, "add", str(root), str(second_slide)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        health = c.get("/healthz").json()
        assert health["generation"] == before + 1 and health["slides"] == 2
        assert [s["name"] for s in c.get("/slides").json()] == ["generated.tif", "second.tif"]
        assert c.get("/slides/2.dzi").status_code == 200


def test_filters_and_votes(tmp_path: Path, generated_slide: Path, second_slide: Path) -> None:
    root = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], root, "stats-lsh32")
    cbir.label_slide(root, "second.tif", {"diagnosis": "B"})
    with TestClient(create_app(root, device="cpu")) as c:
        region = {"slide": 1, "x": 448, "y": 224, "w": 448, "h": 448, "magnification": 20}
        r = c.post("/search", json={**region, "k": 3, "exclude_query_slide": True})
        hits = r.json()["hits"]
        assert len(hits) == 3 and {h["slide_id"] for h in hits} == {2}
        tile = png_bytes(crop(generated_slide, 448, 224, 224, 40))
        r = c.post(
            "/search",
            files={"image": ("q.png", tile, "image/png")},
            data={"k": "4", "slides": "2", "vote": "diagnosis"},
        )
        result = r.json()
        assert [h["slide_id"] for h in result["hits"]] == [2, 2, 2, 2]
        assert result["vote"]["value"] == "B" and result["hits"][0]["labels"] == {"diagnosis": "B"}
        r = c.post("/search", files={"image": ("q.png", tile, "image/png")}, data={"slides": "9"})
        assert r.status_code == 400 and "no slide 9" in r.json()["detail"]
