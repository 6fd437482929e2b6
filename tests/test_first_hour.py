"""The first hour on the command line (issue 24): what a new user meets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbir.cli.main import app

runner = CliRunner()


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("cbir: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("recipe", "train"), [("cnn-lsh32", "cnn"), ("vae-flat", "vae")])
def test_a_learned_recipe_without_weights_is_refused(
    tmp_path: Path, generated_slide: Path, recipe: str, train: str
) -> None:
    out = tmp_path / "idx"
    code, _, stderr = run("build-index", generated_slide, "--out", out, "--recipe", recipe)
    line = one_line_error(code, stderr)
    assert f"cbir train {train}" in line and "--weights" in line and "--untrained" in line
    assert not out.exists()
    code, _, stderr = run(
        "build-index", generated_slide, "--out", out, "--recipe", recipe, "--untrained",
        "--magnifications", "10",
    )  # fmt: skip
    assert code == 0, stderr
    assert (out / "manifest.json").is_file()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("first-hour") / "idx"
    code, _, stderr = run("build-index", generated_slide, "--out", out)
    assert code == 0, stderr
    code, _, stderr = run("label", out, generated_slide.name, "diagnosis=LUAD")
    assert code == 0, stderr
    return out


def test_counts_are_in_words(bundle: Path) -> None:
    code, stdout, _ = run("info", bundle)
    assert code == 0 and ", 1 slide, " in stdout and "1 segment" in stdout


def test_search_without_a_query_says_what_to_give(bundle: Path) -> None:
    line = one_line_error(*run("search", bundle)[::2])
    assert "nothing to search for" in line and "--region" in line and "not both" not in line


def test_search_table_shows_the_slides_labels(bundle: Path, generated_slide: Path) -> None:
    region = f"{generated_slide}:448,224,224,224@40x"
    code, stdout, stderr = run("search", bundle, "--region", region, "-k", "3")
    assert code == 0, stderr
    assert f"labels of {generated_slide.name}: diagnosis=LUAD" in stdout


def test_upgrade_of_a_current_bundle_is_nothing_to_do(bundle: Path) -> None:
    from conftest import tree_digest

    before = tree_digest(bundle)
    code, stdout, stderr = run("upgrade", bundle)
    assert code == 0, stderr
    assert "already bundle format 3; nothing to do" in stdout
    assert tree_digest(bundle) == before
    code, stdout, _ = run("upgrade", bundle, "--json")
    assert code == 0 and '"upgraded":false' in stdout.replace(" ", "")


def test_recipes_mark_the_default_and_what_needs_weights() -> None:
    import json

    code, stdout, _ = run("recipes")
    lines = {line.split(" ")[0].rstrip(":"): line for line in stdout.splitlines()}
    assert code == 0
    assert "[default]" in lines["stats-lsh32"]
    assert "[needs --weights: cbir train cnn]" in lines["cnn-lsh32"]
    assert "needs" not in lines["effnet-flat"].split(":")[0]  # packaged weights
    assert "cbir[fast]" in lines["effnet-int8-flat"].split(":")[0]
    code, stdout, _ = run("recipes", "--json")
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert rows["stats-lsh32"]["default"] and not rows["cnn-flat"]["default"]
    assert rows["ssdh24-ivf"]["weights_from"] == "cbir train ssdh"
    assert rows["effnet-flat"]["weights_from"] is None


def test_the_page_has_a_favicon(bundle: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cbir.serve.app import create_app

    with TestClient(create_app(bundle, device="cpu")) as client:
        icon = client.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
        assert 'rel="icon"' in client.get("/").text


def all_commands() -> list[list[str]]:
    """Every command path of the CLI: [], ["search"], ["train", "cnn"], ..."""
    import typer

    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        for sub in getattr(command, "list_commands", lambda ctx: [])(None) or []:
            paths.append([name, sub])
    return paths


def test_help_keeps_every_option_whole_at_80_columns() -> None:
    import typer

    root = typer.main.get_command(app)
    seen = 0
    for path in all_commands():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        out = result.output
        assert "…" not in out, (path, out)
        assert max(len(line) for line in out.splitlines()) <= 80, path
        command = root
        for name in path:
            command = command.get_command(None, name)  # type: ignore[attr-defined]
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("--"):
                    assert opt in out, (path, opt)
                    seen += 1
    assert seen > 100  # every command's options were looked at


@pytest.fixture()
def slides_without_tissue(tmp_path: Path) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank.png"  # glass only
    Image.fromarray(np.full((1200, 1200, 3), 245, np.uint8)).save(blank)
    tiny = tmp_path / "tiny.png"  # smaller than one tile
    Image.fromarray(np.full((150, 200, 3), 120, np.uint8)).save(tiny)
    return blank, tiny


def test_a_slide_without_tissue_is_left_out_with_a_warning(
    tmp_path: Path, generated_slide: Path, second_slide: Path, slides_without_tissue
) -> None:
    import json

    blank, tiny = slides_without_tissue
    out = tmp_path / "idx"
    code, stdout, stderr = run("build-index", generated_slide, blank, tiny, "--out", out, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert [a["name"] for a in report["added"]] == ["generated.tif"]
    assert [(Path(s["path"]).name, s["no_tissue"]) for s in report["skipped"]] == [
        ("blank.png", True),
        ("tiny.png", True),
    ]
    warnings = [line for line in stderr.splitlines() if line.startswith("cbir: warning:")]
    assert len(warnings) == 2 and "blank.png" in warnings[0] and "tissue" in warnings[0]
    assert "tiny.png: 200 x 150 px" in warnings[1] and "smaller than one 224 px tile" in warnings[1]
    assert "2 slides without tissue left out" in stderr
    code, _, stderr = run("add", out, second_slide, blank)
    assert code == 0 and "blank.png" in stderr, stderr
    code, stdout, _ = run("info", out)
    assert ", 2 slides, " in stdout
    code, _, stderr = run("build-index", blank, tiny, "--out", tmp_path / "none")
    assert code == 2 and "no slide could be indexed" in stderr and not (tmp_path / "none").exists()


def test_an_unreadable_slide_names_skip_errors(tmp_path: Path, generated_slide: Path) -> None:
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"not a slide")
    out = tmp_path / "idx"
    line = one_line_error(*run("build-index", generated_slide, garbage, "--out", out)[::2])
    assert "garbage.svs" in line and "--skip-errors" in line
    assert not out.exists()


def test_a_second_copy_of_an_indexed_slide_is_added_with_a_warning(
    tmp_path: Path, generated_slide: Path
) -> None:
    import shutil

    copy = tmp_path / "copy" / "renamed.tif"
    copy.parent.mkdir()
    shutil.copy(generated_slide, copy)
    out = tmp_path / "idx"
    code, _, stderr = run("build-index", generated_slide, "--out", out, "--magnifications", "10")
    assert code == 0 and "warning" not in stderr, stderr
    code, _, stderr = run("add", out, copy)
    assert code == 0, stderr
    warned = [line for line in stderr.splitlines() if line.startswith("cbir: warning:")]
    assert len(warned) == 1 and "renamed.tif" in warned[0]
    assert str(generated_slide) in warned[0] and "--replace" in warned[0]
    code, _, stderr = run("add", out, copy, "--replace")  # itself again: no warning
    assert code == 0 and "same file" in stderr  # still a copy of generated.tif
    both = tmp_path / "both"
    code, _, stderr = run(
        "build-index", generated_slide, copy, "--out", both, "--magnifications", "10"
    )
    assert code == 0 and stderr.count("the same file as") == 1, stderr


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal() -> None:
    import io

    from cbir.cli.progress import LineProgress

    now = [0.0]
    out = io.StringIO()
    p = LineProgress(out, every=5.0, clock=lambda: now[0])
    p.plan(2, 300)
    p.start("a.svs", 100)
    for _ in range(10):  # 10 tiles a second: a line at most every 5 s
        now[0] += 1.0
        p.advance(10)
    p.start("b.svs", 200)
    now[0] += 1.0
    p.advance(200)  # the unit ends: a line whatever the time
    lines = out.getvalue().splitlines()
    assert lines[0] == "cbir: a.svs 1/2: 50/100 tiles; all: 50/300 tiles, 10.0 tiles/s, 25s left"
    assert lines[1].startswith("cbir: a.svs 1/2: 100/100 tiles")
    assert lines[-1].startswith("cbir: b.svs 2/2: 200/200 tiles; all: 300/300 tiles")
    assert len(lines) == 3


def test_a_piped_build_prints_progress_lines(tmp_path: Path, generated_slide: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "idx"
    cli = "import sys; from cbir.cli.main import app; sys.argv[0] = 'cbir'; app()"
    proc = subprocess.run(
        [sys.executable, "-c", cli, "build-index", str(generated_slide), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "CBIR_PROGRESS_SECONDS": "0"},  # a line at each batch
    )  # stderr is a pipe
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "tiles/s" in line]
    assert lines and lines[-1].startswith("cbir: generated.tif 1/1: ")
    assert "; all: " in lines[-1] and lines[-1].endswith("left")


def test_api_docs_load_nothing_from_the_internet(bundle: Path) -> None:
    pytest.importorskip("fastapi")
    import re

    from fastapi.testclient import TestClient

    from cbir.serve.app import create_app

    with TestClient(create_app(bundle, device="cpu")) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        urls = [u for pair in urls for u in pair if u]
        assert urls and all(u.startswith("/") for u in urls), urls  # same origin, no CDN
        for u in urls:
            assert client.get(u).status_code == 200, u
        assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_a_region_names_its_slide_by_file_name_and_may_leave_out_the_magnification(
    bundle: Path, generated_slide: Path
) -> None:
    import json

    import cbir

    by_path = f"{generated_slide}:448,224,896,896@40x"  # 40x: the slide's highest
    code, stdout, stderr = run("search", bundle, "--region", by_path, "-k", "3", "--json")
    assert code == 0, stderr
    expected = [(h["slide"], h["x"], h["y"]) for h in json.loads(stdout)["hits"]]
    for text in (
        "generated.tif:448,224,896,896@40x",  # the indexed slide's file name
        "generated.tif:448,224,896,896",  # and the magnification left out
        f"{generated_slide}:448,224,896,896",
    ):
        code, stdout, stderr = run("search", bundle, "--region", text, "-k", "3", "--json")
        assert code == 0, (text, stderr)
        got = json.loads(stdout)
        assert [(h["slide"], h["x"], h["y"]) for h in got["hits"]] == expected, text
    with cbir.open_index(bundle) as index:  # the API takes the same
        region = index.resolve_region(cbir.Region.parse("generated.tif:448,224,896,896"))
        assert region.slide == str(generated_slide.resolve()) and region.magnification == 40.0
        hits = index.search("generated.tif:448,224,896,896", k=3).hits
        assert [(h.slide, h.x, h.y) for h in hits] == expected
    line = one_line_error(*run("search", bundle, "--region", "nope.tif:0,0,500,500")[::2])
    assert "nope.tif: no such file, and not a slide of" in line and "generated.tif" in line
    line = one_line_error(*run("search", bundle, "--region", "generated.tif:0,0,100,100")[::2])
    assert "smaller than one 224 px tile" in line


def test_a_refused_upload_is_named_and_says_why_in_the_apis_words(bundle: Path) -> None:
    pytest.importorskip("fastapi")
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from cbir.serve.app import create_app

    buf = io.BytesIO()
    Image.fromarray(np.full((300, 300, 3), 245, np.uint8)).save(buf, "PNG")
    with TestClient(create_app(bundle, device="cpu")) as client:
        files = {"image": ("glass.png", buf.getvalue(), "image/png")}
        refused = client.post("/search", files=files)
        assert refused.status_code == 400
        detail = refused.json()["detail"]
        assert detail.startswith("glass.png: no tissue") and "allow_background" in detail
        assert "<array>" not in detail and "--" not in detail
        allowed = client.post("/search", files=files, data={"allow_background": "true"})
        assert allowed.status_code == 200 and allowed.json()["query"] == "glass.png"


def test_export_over_http_is_the_cli_export_zipped(bundle: Path, generated_slide: Path) -> None:
    pytest.importorskip("fastapi")
    import io
    import zipfile

    from fastapi.testclient import TestClient

    from cbir.serve.app import create_app

    with TestClient(create_app(bundle, device="cpu")) as client:
        slide_id = client.get("/slides").json()[0]["slide_id"]
        body = {"slide": slide_id, "x": 448, "y": 224, "w": 896, "h": 896, "k": 3}
        answer = client.post("/export", json=body)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/zip"
        assert "cbir-export.zip" in answer.headers["content-disposition"]
        names = set(zipfile.ZipFile(io.BytesIO(answer.content)).namelist())
        for expected in ("query.png", "montage.png", "report.html", "result.json", "export.json"):
            assert expected in names, names
        assert sum(n.startswith("hits/") for n in names) == 3
        assert any(n.startswith("geojson/") for n in names)
        code, _, stderr = run(
            "search", bundle, "--region", f"{generated_slide}:448,224,896,896", "-k", "3",
            "--export", bundle.parent / "cli-export",
        )  # fmt: skip
        assert code == 0, stderr
        cli_names = {
            p.relative_to(bundle.parent / "cli-export").as_posix()
            for p in (bundle.parent / "cli-export").rglob("*")
            if p.is_file()
        }
        assert names == cli_names  # the same files as `cbir search --export`
        refused = client.post("/export", json={**body, "w": 10, "h": 10})
        assert refused.status_code == 400 and "smaller than" in refused.json()["detail"]
