"""What a person reads: tables fold long names at 80 columns, distances carry their unit,
verified hits show inliers, short results say why, and bad input is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.cli.render import short_reason, show_hits, show_info
from cbir.search.hits import Hit, SearchResult
from cbir.slides.sample import sample_image

runner = CliRunner()
LONG = "TCGA-AB-1234-01Z-00-DX1.0123456789ABCDEF-0123456789ABCDEF-a-very-long-slide-name.tif"


def hit(rank: int, **update: object) -> Hit:
    fields: dict = dict(
        rank=rank,
        slide=LONG,
        slide_path=f"/data/slides/{LONG}",
        slide_id=1,
        magnification=20.0,
        x=448 * rank,
        y=0,
        w=448,
        h=448,
        row=0,
        col=rank,
        rows=1,
        cols=1,
        distance=float(rank),
        similarity=1 - rank / 32,
    )
    return Hit(**{**fields, **update})


def result(hits: list[Hit], **update: object) -> SearchResult:
    fields: dict = dict(
        query="query.png",
        query_rows=1,
        query_cols=1,
        magnifications=[10.0, 20.0],
        searched_magnifications=[10.0, 20.0],
        hits=hits,
        seconds=0.001,
        k=len(hits),
        distance_kind="hamming",
    )
    return SearchResult(**{**fields, **update})


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def column(out: str, index: int) -> str:
    """The text of one table column (0 = first), its folded pieces joined."""
    cells = [line.split("│") for line in out.splitlines() if line.startswith("│")]
    return "".join(c[index + 1].strip() for c in cells)


def header(out: str, index: int) -> str:
    """The header of one table column (0 = first), its wrapped lines joined by spaces."""
    cells = [line.split("┃") for line in out.splitlines() if line.startswith("┃")]
    return " ".join(c[index + 1].strip() for c in cells if c[index + 1].strip())


def test_long_slide_names_fold_within_80_columns(narrow: None, capsys) -> None:
    show_hits(result([hit(1), hit(2)]))
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert column(out, 1) == LONG + LONG  # both rows' names, whole
    assert header(out, 7) == "distance (Hamming bits)"


def test_info_folds_names_and_paths(narrow: None, capsys) -> None:
    from cbir.api import IndexInfo, SlideEntry

    entry = SlideEntry(
        slide_id=1,
        name=LONG,
        path=f"/data/slides/{LONG}",
        base_magnification=40,
        magnification_source="mpp",
        magnifications=[5, 10, 20, 40],
        tiles=123,
        added="2026-01-01",
    )
    info = IndexInfo(
        path="/data/idx",
        format_version=1,
        recipe="stats-lsh32",
        descriptor="stats",
        encoder="lsh",
        bits=32,
        index_kind="flat",
        nlist=None,
        nprobe=1,
        generation=1,
        slides=[entry],
        tiles=123,
        bytes_on_disk=1000,
        created="2026-01-01",
        updated="2026-01-01",
    )
    show_info(info)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80
    assert column(out, 1) == LONG and column(out, 5) == f"/data/slides/{LONG}"


@pytest.mark.parametrize(
    ("kind", "rows", "expected"),
    [
        ("hamming", 1, "distance (Hamming bits)"),
        ("unit_l2", 1, "distance (squared L2)"),
        ("l2", 1, "distance (squared L2)"),
        ("hamming", 2, "D (Hamming bits)"),
    ],
)
def test_distance_column_says_its_unit(capsys, kind: str, rows: int, expected: str) -> None:
    show_hits(result([hit(1)], distance_kind=kind, query_rows=rows, query_cols=rows))
    assert header(capsys.readouterr().out, 7) == expected


def test_verified_hits_show_inliers_not_negative_distances(capsys) -> None:
    hits = [hit(1, distance=-25.0, inliers=25, matches=40), hit(2, distance=-9.0, inliers=9)]
    show_hits(result(hits, verified=True, distance_kind="inliers"))
    out = capsys.readouterr().out
    assert [header(out, i) for i in (7, 8)] == ["inliers", "matches"]
    assert "distance" not in out and "-25" not in out and "-9" not in out
    assert column(out, 7).startswith("25") and "40" in column(out, 8)


def test_fewer_than_k_hits_say_why() -> None:
    assert short_reason(result([hit(1)] * 3, k=3)) is None
    few = result([hit(1)] * 3, k=10, searched_tiles=3, searched_magnifications=[20.0])
    assert (
        short_reason(few)
        == "3 of k=10 hits: the bundle has 3 tiles at the searched magnifications (20x)"
    )
    dropped = result([hit(1)] * 3, k=10, below_min_similarity=7, min_similarity=0.8)
    assert short_reason(dropped) == "3 of k=10 hits: 7 below --min-similarity 0.8"
    regions = result([hit(1)] * 2, k=5, query_rows=2, query_cols=2, searched_tiles=40)
    assert "only 2 non-overlapping 2 x 2 tile regions were found in 40 tiles" in str(
        short_reason(regions)
    )
    filtered = result([hit(1)], k=5, searched_tiles=1, slides=["a.svs", "b.svs"])
    assert "of the 2 searched slides" in str(short_reason(filtered))
    votes = result([hit(1)], k=5, verified=True, distance_kind="inliers")
    assert "only 1 place had enough local-feature inliers" in str(short_reason(votes))


def test_cli_search_at_80_columns(
    tmp_path: Path, generated_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: a slide with a long name, a bundle of 14 tiles, k = 20."""
    slide = shutil.copy(generated_slide, tmp_path / LONG)
    query = tmp_path / "q.png"
    Image.fromarray(sample_image()[800:1024, 800:1024]).save(query)
    idx = tmp_path / "idx"
    res = runner.invoke(app, ["build-index", str(slide), "--out", str(idx)])
    assert res.exit_code == 0, res.stderr
    monkeypatch.setenv("COLUMNS", "80")
    res = runner.invoke(app, ["search", str(idx), str(query), "-k", "100", "--scale", "20x"])
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80
    assert LONG in column(out, 1)
    n = sum(1 for line in table if line.startswith("│") and line.split("│")[1].strip())
    assert f"{n} of k=100 hits: the bundle has {n} tiles at the searched magnifications (20x)" in (
        " ".join(out.split())
    )


def one_line(res) -> str:  # type: ignore[no-untyped-def]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == 2, res.stderr
    assert len(lines) == 1, res.stderr
    assert "http" not in lines[0] and "╭" not in lines[0]
    return lines[0]


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert one_line(runner.invoke(app, ["search"])).startswith(
        "cbir search: error: Missing argument"
    )
    line = one_line(runner.invoke(app, ["search", str(tmp_path), "q.png", "-k", "abc"]))
    assert line.startswith("cbir search: error: Invalid value for '-k'") and "integer" in line
    line = one_line(runner.invoke(app, ["search", str(tmp_path), "q.png", "--min-similarity", "2"]))
    assert "'--min-similarity'" in line and "less than or equal to 1" in line
    assert "No such command 'nosuch'" in one_line(runner.invoke(app, ["nosuch"]))
    assert "No such option: --bogus" in one_line(runner.invoke(app, ["info", "x", "--bogus"]))
    assert "Missing option '--tiles'" in one_line(runner.invoke(app, ["train", "cnn"]))


def test_validation_errors_are_one_line_naming_the_option(
    tmp_path: Path, generated_slide: Path
) -> None:
    out = str(tmp_path / "idx")
    line = one_line(
        runner.invoke(
            app, ["build-index", str(generated_slide), "--out", out, "--magnifications", "0"]
        )
    )
    assert line == "cbir: error: --magnifications 0: magnification 0.0 must be a finite number > 0"
    line = one_line(
        runner.invoke(app, ["build-index", str(generated_slide), "--out", out, "--stride", "100"])
    )
    assert line == "cbir: error: --stride 100: stride 100 must divide the tile size 224"
    recipe = tmp_path / "bad.toml"
    recipe.write_text(
        'name = "bad"\n[descriptor]\nname = "stats"\n[encoder]\nname = "lsh"\nbitz = 3\n'
    )
    line = one_line(
        runner.invoke(app, ["build-index", str(generated_slide), "--out", out, "-r", str(recipe)])
    )
    assert line.startswith(f"cbir: error: {recipe}: invalid recipe (")
    assert "encoder.bitz: Extra inputs are not permitted" in line
    assert not (tmp_path / "idx").exists()


def test_no_arguments_still_shows_the_help() -> None:
    res = runner.invoke(app, [])
    assert res.exit_code == 2 and "build-index" in res.stdout
