"""Large collections without surprises: `--skip-errors`, and the defects a crash and
bad-input probe found (each fixed, each tested here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cbir
from cbir.errors import BundleError
from conftest import tree_digest

CLI = "from cbir.cli.main import app; app()"


def cbir_cli(*args: object, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run `cbir ARGS` in a fresh interpreter (a SIGBUS shows as a negative return code);
    `limit_file_bytes` caps the size of any file it writes (RLIMIT_FSIZE): writes past it
    fail as on a full disk."""
    code = CLI
    if limit_file_bytes is not None:
        code = (
            "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_file_bytes}, "
            f"{limit_file_bytes})); " + CLI
        )
    cmd = [sys.executable, "-c", code, *(str(a) for a in args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A file that is no image, and a blank (all-glass) image."""
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"not a slide at all")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((1200, 1200, 3), 250, np.uint8)).save(blank)
    return garbage, blank


def test_skip_errors_indexes_the_rest(
    tmp_path: Path, generated_slide: Path, bad_inputs: tuple[Path, Path]
) -> None:
    garbage, blank = bad_inputs
    out = tmp_path / "idx"
    proc = cbir_cli(
        "build-index", generated_slide, garbage, blank, "--out", out, "--skip-errors", "--json"
    )
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert [a["name"] for a in report["added"]] == ["generated.tif"]
    assert [Path(s["path"]).name for s in report["skipped"]] == ["garbage.svs", "blank.png"]
    assert [s["no_tissue"] for s in report["skipped"]] == [False, True]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cbir: skipped:")]
    assert len(lines) == 1 and "garbage.svs" in lines[0]
    warned = [line for line in proc.stderr.splitlines() if line.startswith("cbir: warning:")]
    assert len(warned) == 1 and "blank.png" in warned[0] and "tissue" in warned[0]
    with cbir.open_index(out) as index:
        assert [s.info.name for s in index.slides.values()] == ["generated.tif"]
    # without the flag the build stays all-or-nothing
    proc = cbir_cli("build-index", generated_slide, garbage, "--out", tmp_path / "idx2")
    assert proc.returncode == 2 and "garbage.svs" in proc.stderr and "--skip-errors" in proc.stderr
    assert not (tmp_path / "idx2").exists()


def test_skip_errors_on_add_and_when_nothing_is_left(
    tmp_path: Path, generated_slide: Path, second_slide: Path, bad_inputs: tuple[Path, Path]
) -> None:
    garbage, blank = bad_inputs
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    report = cbir.add_slides(out, [garbage, second_slide], skip_errors=True)
    assert [a.name for a in report.added] == ["second.tif"]
    assert [Path(s.path).name for s in report.skipped] == ["garbage.svs"]
    assert report.slides_total == 2
    before = tree_digest(out)
    proc = cbir_cli("add", out, garbage, blank, "--skip-errors")
    assert proc.returncode == 2 and "no slide could be indexed: all 2 were skipped" in proc.stderr
    assert tree_digest(out) == before
    proc = cbir_cli("build-index", garbage, "--out", tmp_path / "none", "--skip-errors")
    assert proc.returncode == 2 and not (tmp_path / "none").exists()


def test_a_killed_first_build_does_not_block_the_next(
    tmp_path: Path, generated_slide: Path
) -> None:
    """What a first build killed between renaming its generation and publishing the
    manifest leaves behind; build-index, with or without --overwrite, then works."""
    for overwrite in (False, True):
        out = tmp_path / f"idx-{overwrite}"
        (out / "seg-000001" / "meta.lmdb").mkdir(parents=True)
        (out / "seg-000001" / "tiles.fbin").write_bytes(b"half written")
        (out / "seg-000001" / ".unpublished").touch()  # the writer's mark until it publishes
        (out / ".tmp-123-state-000001").mkdir()
        (out / ".lock").write_text("")
        (out / ".manifest.json.tmp").write_text('{"format_version": 2')
        report = cbir.build_index([generated_slide], out, overwrite=overwrite)
        assert report.tiles_total > 0
        names = sorted(p.name for p in out.iterdir())
        # the debris is swept, and names go past it (never reused)
        assert names == [".lock", "manifest.json", "seg-000002", "state-000002"]
        with cbir.open_index(out) as index:
            assert index.info().tiles == report.tiles_total
    # a published-looking segment without a manifest is not debris: nothing is deleted
    bare = tmp_path / "bare"
    (bare / "seg-000001").mkdir(parents=True)
    (bare / "seg-000001" / "tiles.fbin").write_bytes(b"somebody's data")
    with pytest.raises(BundleError, match="not empty and is not an index bundle"):
        cbir.build_index([generated_slide], bare, overwrite=True)
    assert (bare / "seg-000001" / "tiles.fbin").read_bytes() == b"somebody's data"
    # anything else in the directory still makes it "not an index bundle"
    other = tmp_path / "other"
    (other / "gen-000001").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty and is not an index bundle"):
        cbir.build_index([generated_slide], other)
    assert (other / "notes.txt").read_text() == "mine"


def test_empty_folders_and_symlink_loops_are_one_line(
    tmp_path: Path, generated_slide: Path
) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    (tmp_path / "empty").mkdir()
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    before = tree_digest(out)
    for args, needle in [
        (("add", out, tmp_path / "empty"), "empty: no slide or image files in this folder"),
        (("add", out, tmp_path / "loop_a"), "loop_a: cannot resolve the path"),
        (("build-index", tmp_path / "loop_a", "--out", tmp_path / "x"), "cannot resolve"),
    ]:
        proc = cbir_cli(*args)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert tree_digest(out) == before


def test_negative_region_coordinates_are_named(tmp_path: Path, generated_slide: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    proc = cbir_cli("search", out, "--region", f"{generated_slide}:-500,-500,448,448@20x")
    assert proc.returncode == 2 and "negative coordinates" in proc.stderr, proc.stderr
    proc = cbir_cli("search", out, "--region", f"{generated_slide}:0,0,-448,448@20x")
    assert proc.returncode == 2 and "width and height must be > 0" in proc.stderr


def test_a_truncated_lmdb_is_an_error_not_sigbus(tmp_path: Path, generated_slide: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    data = next(out.glob("seg-*/meta.lmdb/data.mdb"))
    with data.open("r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    for args in (("search", out, f"{generated_slide}"), ("info", out)):
        proc = cbir_cli(*args)
        assert proc.returncode == 2, (proc.returncode, proc.stderr)  # -7 would be SIGBUS
        assert "data.mdb is damaged" in proc.stderr, proc.stderr


def test_a_failed_write_names_the_bundle_and_changes_nothing(
    tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out)
    before = tree_digest(out)
    for limit in (1024, 8192):  # fails writing the new segment's index / its LMDB
        proc = cbir_cli("add", out, second_slide, limit_file_bytes=limit)
        assert proc.returncode == 2, proc.stderr
        assert f"{out}: could not write the new generation" in proc.stderr
        assert "free on its device" in proc.stderr and "the bundle is unchanged" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert tree_digest(out) == before
    with cbir.open_index(out) as index:
        assert len(index.slides) == 1
