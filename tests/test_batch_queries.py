"""Batch queries (a folder of images, a CSV of regions), slide filters that still return k
hits, and slide labels with the majority vote of the top k."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import CbirError, QueryError
from cbir.search.hits import Hit, majority_vote
from conftest import CMU, TCGA, needs_shared_data

runner = CliRunner()


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cbir: error: ")]


def one_error_line(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cbir: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, generated_slide: Path, second_slide: Path
) -> Path:
    out = tmp_path_factory.mktemp("batch") / "idx"
    cbir.build_index([generated_slide, second_slide], out, "stats-lsh32")
    return out


@pytest.fixture
def labelled(tmp_path: Path, bundle: Path) -> Path:
    """A private copy of the bundle whose slides are labelled."""
    import shutil

    copy = tmp_path / "labelled"
    shutil.copytree(bundle, copy)
    cbir.label_slide(copy, "generated.tif", {"diagnosis": "LUAD", "case": "A-1"})
    cbir.label_slide(copy, "second.tif", {"diagnosis": "LUSC"})
    return copy


def _crop(slide: Path, x: int, y: int, size: int, mag: float) -> np.ndarray:
    with cbir.open_slide(slide) as s:
        level0 = round(size * s.info.base_magnification / mag)
        return s.read_region(x, y, level0, level0, mag)


# -- batches ----------------------------------------------------------------------------
def test_a_folder_of_images_gives_one_json_line_per_query_and_names_the_failures(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "queries"
    folder.mkdir()
    for i, (x, y) in enumerate([(448, 448), (896, 0), (0, 896)]):
        Image.fromarray(_crop(generated_slide, x, y, 448, 20.0)).save(folder / f"q{i}.png")
    Image.fromarray(np.full((448, 448, 3), 255, np.uint8)).save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("not a query")
    code, stdout, stderr = run("search", bundle, folder, "-k", "3", "--json")
    assert code == 1, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [Path(d["query"]).name for d in lines] == [
        "blank.png", "broken.jpg", "q0.png", "q1.png", "q2.png",
    ]  # fmt: skip
    ok = [d for d in lines if "error" not in d]
    assert len(ok) == 3 and all(len(d["hits"]) == 3 for d in ok)
    assert all(d["hits"][0]["slide"] == generated_slide.name for d in ok)
    errors = error_lines(stderr)
    assert len(errors) == 2
    assert "blank.png" in errors[0] and "no tissue" in errors[0]
    assert "broken.jpg" in errors[1]
    summary = stderr.strip().splitlines()[-1]
    assert summary.startswith("searched 5 queries: 3 ok, 2 failed (")
    assert "blank.png" in summary and "broken.jpg" in summary


def test_a_csv_of_regions_runs_every_good_row(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "regions.csv"
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "g.tif").symlink_to(generated_slide)
    csv.write_text(
        "id,slide,x,y,w,h,magnification\n"
        f"a,{generated_slide},448,448,896,896,20x\n"
        "b,slides/g.tif,896,448,896,896,20\n"  # relative to the CSV's folder
        f"c,{generated_slide},abc,0,448,448,20\n"
        "\n"
        f"d,{generated_slide},0,0,99999,448,20\n"
        f"e,{generated_slide},0,0,896,896,twenty\n"
        f"f,{generated_slide},448,448,896,896,\n"  # empty: as --region without @MAGx
        f"g,{generated_slide},448,448,896,896,0x\n"
    )
    code, stdout, stderr = run("search", bundle, csv, "-k", "2")
    assert code == 1
    errors = error_lines(stderr)
    assert len(errors) == 4
    assert f"{csv} line 4: x 'abc' is not a whole number" in errors[0]
    assert f"{csv} line 6: " in errors[1] and "runs past the slide's edge" in errors[1]
    assert f"{csv} line 7: magnification 'twenty'" in errors[2]
    assert f"{csv} line 9: magnification '0x': give one of at least 0.1x" in errors[3]
    assert "searched 7 queries: 3 ok, 4 failed" in stdout
    assert stdout.count("similarity") == 3  # three tables of hits


def test_a_batch_exports_one_folder_per_query_and_a_front_page(
    bundle: Path, generated_slide: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "regions.csv"
    csv.write_text(
        "slide,x,y,w,h,magnification\n"
        f"{generated_slide},448,448,896,896,20\n"
        f"{generated_slide},0,0,1,1,20\n"
        f"{generated_slide},896,0,896,896,10\n"
    )
    code, stdout, stderr = run("search", bundle, csv, "-k", "2", "--export", tmp_path / "exp")
    assert code == 1 and len(error_lines(stderr)) == 1
    folders = sorted(p.name for p in (tmp_path / "exp").iterdir() if p.is_dir())
    assert folders == ["001-generated", "003-generated"]
    for f in folders:
        assert len(list((tmp_path / "exp" / f / "hits").iterdir())) == 2
    front = (tmp_path / "exp" / "index.html").read_text()
    assert "001-generated/report.html" in front and "failed" in front
    marker = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert marker["kind"] == "batch" and marker["failed"] == [f"{csv} line 3"]


def test_bad_batch_inputs_are_one_line(bundle: Path, tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("slide,x,y,width,height,mag\na.svs,0,0,1,1,20\n")
    line = one_error_line(*run("search", bundle, csv)[::2])
    assert "bad.csv" in line and "missing w, h, magnification" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no query images" in one_error_line(*run("search", bundle, empty)[::2])
    Image.new("RGB", (224, 224), "white").save(empty / "q.png")
    code, _, stderr = run("search", bundle, empty, "--exclude-query-slide")
    assert "needs region queries" in one_error_line(code, stderr)


# -- filters ----------------------------------------------------------------------------
def test_exclude_query_slide_still_returns_k_hits(
    bundle: Path, generated_slide: Path, second_slide: Path
) -> None:
    region = f"{generated_slide}:448,448,896,896@20x"
    with cbir.open_index(bundle) as ix:
        plain = ix.search(region, k=5)
        # without the filter the top 5 start on the query's own slide ...
        assert plain.hits[0].slide == generated_slide.name
        left = [h for h in plain.hits if h.slide != generated_slide.name]
        result = ix.search(region, k=5, exclude_query_slide=True)
        # ... so dropping them after the top k would have left fewer than 5
        assert (
            len(left) < 5
            and len(result.hits) == 5
            and {h.slide for h in result.hits} == {second_slide.name}
        )
        assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
        assert result.exclude_query_slide and result.slides == [second_slide.name]
        same = ix.search(cbir.Region.parse(region), k=5, slides=[second_slide.name])
        assert [(h.x, h.y, h.magnification) for h in same.hits] == [
            (h.x, h.y, h.magnification) for h in result.hits
        ]
        with pytest.raises(QueryError, match="needs a region query"):
            ix.search(ix.query_image(region)[0], exclude_query_slide=True)
        with pytest.raises(QueryError, match="nothing to search"):
            ix.search(region, slides=[str(generated_slide)], exclude_query_slide=True)


def test_slides_filter_on_tile_queries_keeps_k(
    bundle: Path, generated_slide: Path, second_slide: Path
) -> None:
    tile = _crop(generated_slide, 448, 448, 224, 20.0)
    with cbir.open_index(bundle) as ix:
        plain = ix.search(tile, k=8)
        assert plain.hits[0].slide == generated_slide.name
        result = ix.search(tile, k=8, slides=[str(second_slide)])
        assert len(result.hits) == 8 and {h.slide for h in result.hits} == {second_slide.name}
        distances = [h.distance for h in result.hits]
        assert distances == sorted(distances)
        # the same as the best of an unfiltered search that goes deep enough
        deep = [
            h for h in ix.search(tile, k=ix.bundle.index.ntotal).hits if h.slide == "second.tif"
        ]
        assert [h.tile_id for h in result.hits] == [h.tile_id for h in deep[:8]]


def test_unknown_slides_are_one_line(bundle: Path, generated_slide: Path) -> None:
    region = f"{generated_slide}:448,448,896,896@20x"
    code, _, stderr = run("search", bundle, "--region", region, "--slides", "second.tif,nope.svs")
    line = one_error_line(code, stderr)
    assert "nope.svs: not a slide of" in line and "second.tif" in line
    with cbir.open_index(bundle) as ix, pytest.raises(CbirError, match="nope.svs"):
        ix.search(region, slides=["nope.svs"])


# -- labels and the vote ----------------------------------------------------------------
def test_labels_are_stored_atomically_shown_and_carried_by_hits(
    labelled: Path, generated_slide: Path, second_slide: Path
) -> None:
    manifest = json.loads((labelled / "manifest.json").read_text())
    assert manifest["generation"] == 3 and manifest["counts"]["tiles"] > 0  # one per label
    code, stdout, _ = run("info", labelled, "--json")
    labels = {s["name"]: s["labels"] for s in json.loads(stdout)["slides"]}
    assert labels == {
        "generated.tif": {"case": "A-1", "diagnosis": "LUAD"},
        "second.tif": {"diagnosis": "LUSC"},
    }
    code, stdout, _ = run("info", labelled)
    assert "labels of generated.tif: case=A-1, diagnosis=LUAD" in stdout
    code, stdout, stderr = run(
        "search", labelled, "--region", f"{generated_slide}:448,448,896,896@20x", "-k", "6",
        "--vote", "diagnosis", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result = json.loads(stdout)
    for hit in result["hits"]:
        assert hit["labels"]["diagnosis"] == ("LUAD" if hit["slide"] == "generated.tif" else "LUSC")
    n_luad = sum(h["labels"]["diagnosis"] == "LUAD" for h in result["hits"])
    vote = result["vote"]
    assert vote["key"] == "diagnosis" and vote["of"] == 6 and vote["hits"] == 6
    assert vote["counts"]["LUAD"] == n_luad and vote["value"] == ("LUAD" if n_luad >= 3 else "LUSC")
    code, stdout, _ = run(
        "search", labelled, "--region", f"{generated_slide}:448,448,896,896@20x", "-k", "5",
        "--vote", "diagnosis", "--exclude-query-slide",
    )  # fmt: skip
    assert code == 0 and "vote diagnosis (top 5): LUSC, 5 of 5 labelled hits" in stdout
    assert "searched slides: second.tif (the query's own slide excluded)" in stdout


def test_label_cli_sets_unsets_and_refuses_in_one_line(labelled: Path, second_slide: Path) -> None:
    code, stdout, _ = run("label", labelled, "second.tif", "case=B-2", "--unset", "diagnosis")
    assert code == 0 and stdout.strip() == "second.tif: case=B-2"
    code, stdout, _ = run("label", labelled, str(second_slide), "--json")
    assert code == 0 and json.loads(stdout)["labels"] == {"case": "B-2"}
    for args, needle in [
        (["nope.svs", "a=b"], "nope.svs: not a slide of"),
        (["second.tif", "novalue"], "expected key=value"),
        (["second.tif", "a b=c"], "label key 'a b'"),
        (["second.tif", "a="], "has no value"),
    ]:
        assert needle in one_error_line(*run("label", labelled, *args)[::2])
    code, _, stderr = run("search", labelled, "--region", "x.svs:0,0,1,1@20x", "--vote", "a b")
    assert "label key 'a b'" in one_error_line(code, stderr)


def test_labels_survive_replacing_a_slide(labelled: Path, second_slide: Path) -> None:
    cbir.add_slides(labelled, [second_slide], replace=True)
    with cbir.open_index(labelled) as ix:
        labels = {r.info.name: r.labels for r in ix.slides.values()}
    assert labels["second.tif"] == {"diagnosis": "LUSC"}


def _hit(rank: int, **labels: str) -> Hit:
    return Hit(
        rank=rank, slide="s", slide_path="/s", slide_id=1, magnification=20.0, x=0, y=0,
        w=1, h=1, row=0, col=0, rows=1, cols=1, distance=0.0, labels=labels,
    )  # fmt: skip


def test_majority_vote_counts_labelled_hits_and_breaks_ties_by_rank() -> None:
    hits = [_hit(1, d="B"), _hit(2, d="A"), _hit(3), _hit(4, d="A"), _hit(5, d="B")]
    vote = majority_vote(hits, "d")
    assert (vote.value, vote.count, vote.hits, vote.of) == ("B", 2, 4, 5)  # tie: rank 1 is B
    assert majority_vote(hits + [_hit(6, d="A")], "d").value == "A"
    assert majority_vote(hits, "other").value is None


@needs_shared_data
def test_real_slides_vote_by_diagnosis(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([CMU, TCGA], out, "stats-lsh32")
    cbir.label_slide(out, CMU.name, {"tissue": "skin"})
    cbir.label_slide(out, str(TCGA), {"tissue": "colon"})
    with cbir.open_index(out) as ix:
        region = cbir.Region(slide=str(TCGA), x=1000, y=2000, w=448, h=448, magnification=20)
        result = ix.search(region, k=5, vote="tissue")
        excluded = ix.search(region, k=5, vote="tissue", exclude_query_slide=True)
    assert result.vote is not None and result.vote.value == "colon"
    assert excluded.vote is not None and excluded.vote.value == "skin"
    assert len(excluded.hits) == 5


DELF_VOTES_RECIPE = """name = "delf-small"
[tiling]
tile_size = 448
magnifications = [20]
[descriptor]
name = "delf"
params = { trunk = "small-dense" }
[encoder]
name = "float"
[index]
float_factory = "Flat"
[search]
k = 5
verify = true
[local]
params = { trunk = "small-dense", scales = [0.5, 0.7071, 1.0, 1.4142], max_features = 300 }
float_factory = "HNSW32,Flat"
candidates_from = "votes"
"""


def test_exclude_query_slide_in_local_feature_votes(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    """Hits found by local-feature votes + RANSAC (an untrained small DELF) obey the
    filter too: the query's own slide is left out before candidates are taken."""
    recipe = tmp_path / "delf-small.toml"
    recipe.write_text(DELF_VOTES_RECIPE)
    out = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], out, recipe, device="cpu", untrained=True)
    region = f"{generated_slide}:448,448,896,896@20x"
    with cbir.open_index(out, device="cpu") as ix:
        plain = ix.search(region, k=3)
        excluded = ix.search(region, k=3, exclude_query_slide=True)
    assert plain.verified and plain.hits[0].slide == generated_slide.name
    assert excluded.verified and excluded.hits
    assert {h.slide for h in excluded.hits} == {second_slide.name}
