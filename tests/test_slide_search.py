"""Slide queries: mosaics chosen and stored at indexing, slides ranked by the pooled
vectors or median-of-minimum, case exclusion, a slide file that is not indexed, the
CLI, HTTP and `cbir evaluate --slides` on a labelled set cut from the shared slides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import QueryError
from cbir.eval.slide_parts import write_labels_csv, write_slide_parts
from cbir.search.slide_rank import METHODS
from cbir.serve.app import create_app
from cbir.slides.mosaic import MosaicSpec, choose_mosaic
from cbir.slides.sample import write_sample_slide
from cbir.storage.mosaics import mosaic_from_grid, read_mosaic
from tests.conftest import CMU, TCGA, needs_shared_data

runner = CliRunner()


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 slides: CMU in 2 parts (2 cases), TCGA in 4 (2 cases of 2), the sample in 2."""
    if not (CMU.is_file() and TCGA.is_file()):
        pytest.skip("real slides not found (a fresh clone has no ../shared/data)")
    out = tmp_path_factory.mktemp("parts")
    sample = write_sample_slide(out / "src" / "ihc.tif")
    rows = write_slide_parts(CMU, out, "cmu", 2, 1)
    rows += write_slide_parts(TCGA, out, "tcga", 2, 2, per_case=2)
    rows += write_slide_parts(sample, out, "ihc", 1, 2)
    write_labels_csv(rows, out / "labels.csv")
    return out


@pytest.fixture(scope="module")
def parts_index(parts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parts-idx") / "idx"
    labels = {}
    for line in (parts / "labels.csv").read_text().splitlines()[1:]:
        name, label, case = line.split(",")
        labels[str((parts / name).resolve())] = {"label": label, "case": case}
    cbir.build_index(sorted(parts.glob("*.tif")), root, "stats-lsh32", labels=labels)
    return root


def test_mosaic_covers_each_colour_and_place() -> None:
    """Two colours side by side: the mosaic keeps both, about 5 % of the tiles, spread
    over each colour's area; the same seed gives the same mosaic."""
    rr, cc = np.meshgrid(np.arange(40), np.arange(60), indexing="ij")
    centres = np.stack([cc.ravel() * 224.0, rr.ravel() * 224.0], axis=1)
    colours = np.where(cc.ravel()[:, None] < 20, [200, 120, 180], [120, 60, 160]).astype(float)
    colours = np.concatenate([colours, np.full_like(colours, 10.0)], axis=1)
    kept = choose_mosaic(centres, colours, MosaicSpec(clusters=9, fraction=0.05, max_tiles=100))
    assert 0.04 * 2400 <= len(kept) <= 0.07 * 2400
    left = cc.ravel()[kept] < 20
    assert 0.2 <= left.mean() <= 0.45  # a third of the tiles are left of column 20
    assert np.array_equal(kept, choose_mosaic(centres, colours))
    capped = choose_mosaic(centres, colours, MosaicSpec(max_tiles=10))
    assert 2 <= len(capped) <= 10 and set(left[:0]) <= {True, False}
    assert len(choose_mosaic(centres[:3], None)) == 3  # a tiny slide: all its tiles
    assert len(choose_mosaic(centres[:100], None)) == 16  # a small one: MIN_MOSAIC_TILES


def test_mosaic_has_its_size_whatever_the_colour_clusters() -> None:
    """Clusters' shares are rounded: they used to sum below the size asked (a 170-tile
    slide got 15 tiles, under MIN_MOSAIC_TILES); coinciding tiles are topped up."""
    rng = np.random.default_rng(0)
    for n in (17, 40, 170, 333, 900, 2500):
        for seed in range(3):
            centres = rng.uniform(0, 20_000, (n, 2))
            colours = rng.normal(0, 1, (n, 6)) * rng.choice([1, 5, 20], 6)
            spec = MosaicSpec()
            want = min(spec.max_tiles, n, max(spec.min_tiles, round(spec.fraction * n)))
            kept = choose_mosaic(centres, colours, spec, seed=seed)
            assert len(kept) == len(set(kept.tolist())) == want, (n, seed, len(kept))
    same = np.zeros((50, 2))  # every tile at one place: k-means finds one
    assert len(choose_mosaic(same, None)) == 16


@needs_shared_data
def test_indexing_stores_each_slides_mosaic(parts_index: Path) -> None:
    with cbir.open_index(parts_index) as ix:
        meta, pipe = ix.bundle.meta, ix.bundle.pipeline
        for sid in ix.slides:
            stored = read_mosaic(meta.store_of(sid), sid)
            assert stored is not None and stored.magnification == 20.0
            grid = meta.grid(sid, 20.0)
            assert 1 <= len(stored.tile_ids) <= min(100, int(grid.valid.sum()))
            assert set(stored.tile_ids.tolist()) <= set(grid.ids[grid.valid].tolist())
            rebuilt = mosaic_from_grid(grid, pipe.codes_from_bytes, pipe.binary)
            np.testing.assert_allclose(rebuilt.pooled, stored.pooled, atol=1e-6)
        entry = ix.bundle.manifest.segments[0]
        assert entry.artifacts["mosaics"].rows == len(ix.slides)


@needs_shared_data
@pytest.mark.parametrize("method", METHODS)
def test_parts_find_a_sibling_first(parts_index: Path, parts: Path, method: str) -> None:
    """Leave-one-case-out: each part's top hit has its source's label, and no hit is of
    its own case; every hit explains itself with tile pairs."""
    labels = {}
    for line in (parts / "labels.csv").read_text().splitlines()[1:]:
        name, label, case = line.split(",")
        labels[name] = (label, case)
    firsts = []
    with cbir.open_index(parts_index) as ix:
        for name, (label, case) in labels.items():
            if name not in {r.info.name for r in ix.slides.values()}:
                continue  # no tissue
            r = ix.search_slide(
                name, k=3, method=method, exclude_query_slide=True, case_label="case"
            )
            assert all(labels[h.slide][1] != case for h in r.hits)
            assert all(h.pairs and len(h.pairs) == r.query_tiles for h in r.hits)
            assert [h.rank for h in r.hits] == list(range(1, len(r.hits) + 1))
            firsts.append(labels[r.hits[0].slide][0] == label)
    if method == "pooled":  # the default: every part's first hit is a sibling
        assert all(firsts), firsts
    else:
        assert sum(firsts) >= len(firsts) - 2, firsts


@needs_shared_data
def test_an_indexed_slide_matches_itself_and_its_file(parts_index: Path, parts: Path) -> None:
    """Without exclusion a slide is its own best match at distance 0, whether named by
    file name, by path, by id or by a copy of its file elsewhere (same content)."""
    with cbir.open_index(parts_index) as ix:
        sid = next(r.slide_id for r in ix.slides.values() if r.info.name == "tcga-1.tif")
        copy = parts / "elsewhere" / "copy.tif"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(parts / "tcga-1.tif", copy)
        for query in ("tcga-1.tif", str(parts / "tcga-1.tif"), sid, str(copy)):
            r = ix.search_slide(query, k=2, method="median")
            assert r.query_slide_id == sid
            assert r.hits[0].slide == "tcga-1.tif" and r.hits[0].distance == 0.0
            assert r.hits[0].pairs[0].query == r.hits[0].pairs[0].hit


@needs_shared_data
def test_a_slide_file_not_indexed_is_read_and_described(parts: Path, tmp_path: Path) -> None:
    """An index without tcga-3: tcga-3's file as the query finds a TCGA part first; its
    mosaic was read from the file, its pair rectangles lie in it."""
    root = tmp_path / "idx"
    others = [p for p in sorted(parts.glob("*.tif")) if p.name != "tcga-3.tif"]
    cbir.build_index(others, root, "stats-lsh32")
    with cbir.open_index(root) as ix:
        r = ix.search_slide(parts / "tcga-3.tif", k=3)
    assert r.query_slide_id is None and r.query_tiles >= 1
    assert r.hits[0].slide.startswith("tcga-")
    w, h = cbir.open_slide(parts / "tcga-3.tif").dimensions
    for p in r.hits[0].pairs:
        assert 0 <= p.query[0] and p.query[0] + p.query[2] <= w and p.query[1] + p.query[3] <= h


@needs_shared_data
def test_slide_query_refusals(parts_index: Path) -> None:
    with cbir.open_index(parts_index) as ix:
        with pytest.raises(QueryError, match="nosuch.tif: no such file, and not a slide of"):
            ix.search_slide("nosuch.tif")
        with pytest.raises(QueryError, match="needs --exclude-query-slide"):
            ix.search_slide("cmu-0.tif", case_label="case")
        with pytest.raises(QueryError, match="'best' is unknown"):
            ix.search_slide("cmu-0.tif", method="best")
        with pytest.raises(QueryError, match="no slide 99"):
            ix.search_slide(99)


@needs_shared_data
def test_cbir_search_slide_cli(parts_index: Path) -> None:
    args = ["search", str(parts_index), "--slide", "tcga-0.tif", "-k", "3"]
    r = runner.invoke(app, [*args, "--exclude-query-slide", "--case-label", "case", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["method"] == "pooled" and result["case_label"] == "case"
    assert {h["slide"] for h in result["hits"]}.isdisjoint({"tcga-0.tif", "tcga-1.tif"})
    r = runner.invoke(app, [*args, "--slide-ranking", "median", "--vote", "label"])
    assert r.exit_code == 0, r.output
    assert "median-of-minimum to every tile" in r.stdout and "vote label" in r.stdout
    assert "tcga-0.tif" in r.stdout  # itself, first
    r = runner.invoke(app, [*args, "--scale", "20x"])
    assert r.exit_code == 2 and "--scale: not for slide queries" in r.output
    r = runner.invoke(app, ["search", str(parts_index), "x.png", "--case-label", "case"])
    assert r.exit_code == 2 and "--case-label is for slide queries" in r.output


@needs_shared_data
def test_search_slide_over_http(parts_index: Path) -> None:
    with TestClient(create_app(parts_index, device="cpu")) as client:
        slides = {s["name"]: s["slide_id"] for s in client.get("/slides").json()}
        body = {"slide": slides["cmu-0.tif"], "k": 2, "exclude_query_slide": True}
        r = client.post("/search/slide", json=body)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["slide"] == "cmu-1.tif" and hits[0]["pairs"]
        assert client.post("/search/slide", json={"slide": 99}).status_code == 404
        bad = client.post("/search/slide", json={"slide": "/etc/passwd"})
        assert bad.status_code == 400  # an id, never a path


@needs_shared_data
def test_evaluate_slides(parts: Path) -> None:
    r = runner.invoke(app, ["evaluate", "--slides", str(parts), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["method"] == "pooled" and report["classes"] == 3
    assert report["micro"]["acc_at_1"] == 1.0 and report["mean"]["f1"] == 1.0
    assert set(report["per_class"]) == {"cmu", "ihc", "tcga"}
    bad = parts / "bad.csv"
    bad.write_text("slide,label\nnosuch.tif,x\n")
    r = runner.invoke(app, ["evaluate", "--slides", str(parts), "--labels", str(bad)])
    assert r.exit_code != 0 and "nosuch.tif: no such slide" in r.output
    r = runner.invoke(app, ["evaluate"])
    assert r.exit_code != 0 and "give one of --tiles DIR or --slides DIR" in r.output


def test_a_bundle_from_before_mosaics_answers_slide_queries(tmp_path: Path) -> None:
    """Bundles written before mosaics were stored (format 2 here) have no `mosaics`
    table: a slide's mosaic is chosen from its stored grid (by place) when asked."""
    root = tmp_path / "idx"
    shutil.copytree(Path(__file__).parent / "data" / "bundle-format2", root)
    with cbir.open_index(root) as ix:
        for method in METHODS:
            result = ix.search_slide(1, k=2, method=method)
            assert result.query_tiles >= 1
            assert [h.slide for h in result.hits] == ["generated.tif", "second.tif"]
            assert result.hits[0].similarity == pytest.approx(1.0)
            assert result.hits[0].pairs[0].query == result.hits[0].pairs[0].hit


def test_slide_query_words(generated_slide: Path, second_slide: Path, tmp_path: Path) -> None:
    """A slide query says what a query would: no tissue "to query with" (not "nothing to
    index ... --min-tissue", an option search does not have); patch options it ignored
    are refused; "the query's own slide excluded" only when one was; CLI flag names."""
    from PIL import Image

    root = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], root, "stats-lsh32")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1500, 1500), (245, 245, 245)).save(blank)
    r = runner.invoke(app, ["search", str(root), "--slide", str(blank)])
    assert r.exit_code == 2 and "no tissue to query with" in r.stderr
    assert "--min-tissue" not in r.stderr and "index" not in r.stderr.split(":", 2)[-1]
    for option in (["--allow-background"], ["--expand", "2"]):
        r = runner.invoke(app, ["search", str(root), "--slide", generated_slide.name, *option])
        assert r.exit_code == 2 and f"{option[0]}: not for slide queries" in r.stderr
    r = runner.invoke(app, ["search", str(root), "--slide", "generated.tif", "--case-label", "c"])
    assert r.exit_code == 2 and "it needs --exclude-query-slide" in r.stderr
    copy = tmp_path / "elsewhere" / "copy.tif"  # not indexed, another file's bytes
    copy.parent.mkdir()
    shutil.copy(second_slide, copy)
    args = ["search", str(root), "--slide", str(copy), "--exclude-query-slide", "-k", "1"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # the copy's checksum is second.tif's: that one is left out
    assert out["exclude_query_slide"] is True and out["hits"][0]["slide"] == "generated.tif"
    flipped = copy.with_suffix(".png")  # now nothing of the bundle is the query's own
    Image.fromarray(np.asarray(Image.open(generated_slide))[::-1].copy()).save(flipped)
    r = runner.invoke(app, [*args[:3], str(flipped), *args[4:], "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["exclude_query_slide"] is False
