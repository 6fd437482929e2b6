"""The CLI as a user runs it: JSON output, bad input, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.errors import BundleError
from conftest import CMU, needs_shared_data, tree_digest

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cbir: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "idx"
    code, stdout, stderr = run("build-index", generated_slide, "--out", out, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["slides_total"] == 1 and report["tiles_total"] > 100
    return out


@pytest.fixture
def fresh_bundle(tmp_path: Path, bundle: Path) -> Path:
    """A private copy of the module bundle, for tests that try to change it."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    return copy


def test_search_json_and_info_json(bundle: Path, generated_slide: Path, tmp_path: Path) -> None:
    code, stdout, _ = run(
        "search", bundle, "--region", f"{generated_slide}:896,0,896,896@20x", "-k", "3", "--json"
    )
    assert code == 0
    result = json.loads(stdout)
    assert result["query_rows"] == result["query_cols"] == 2
    assert len(result["hits"]) == 3 and result["hits"][0]["rank"] == 1
    hit = result["hits"][0]
    assert {"slide", "magnification", "x", "y", "w", "h", "distance"} <= set(hit)
    tile = tmp_path / "tile.png"
    with cbir.open_index(bundle) as ix:
        Image.fromarray(ix.query_image(f"{generated_slide}:0,0,448,448@20x")[0]).save(tile)
    code, stdout, _ = run("search", bundle, tile, "--json")
    assert code == 0 and json.loads(stdout)["query_rows"] == 1
    code, stdout, _ = run("info", bundle, "--json")
    info = json.loads(stdout)
    assert code == 0 and info["recipe"] == "stats-lsh32" and info["index_kind"] == "flat"
    assert info["slides"][0]["name"] == generated_slide.name
    assert info["tiles"] == sum(s["tiles"] for s in info["slides"])


def test_add_remove_cli(fresh_bundle: Path, second_slide: Path, generated_slide: Path) -> None:
    code, stdout, _ = run("add", fresh_bundle, second_slide, "--json")
    assert code == 0 and json.loads(stdout)["slides_total"] == 2
    code, _, stderr = run("add", fresh_bundle, second_slide)
    assert_one_line_error(code, stderr, str(second_slide.resolve()), "already in", "--replace")
    code, stdout, _ = run("add", fresh_bundle, second_slide, "--replace")
    assert code == 0 and "replaced" in stdout
    code, stdout, _ = run("remove", fresh_bundle, second_slide.name, "--json")
    assert code == 0 and json.loads(stdout)["slides_total"] == 1
    code, _, stderr = run("remove", fresh_bundle, "nope.svs")
    assert_one_line_error(code, stderr, "nope.svs", "not a slide of", "generated.tif")


def bad_files(tmp: Path, generated_slide: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected words in the error line)."""
    empty = tmp / "empty.svs"
    empty.write_bytes(b"")
    text = tmp / "notes.svs"
    text.write_text("not a slide\n")
    truncated = tmp / "truncated.tif"
    data = generated_slide.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    white = tmp / "white.png"
    Image.fromarray(np.full((1200, 1200, 3), 245, np.uint8)).save(white)
    return {
        "zero-byte": (empty, "empty"),
        "unsupported": (text, "unsupported"),
        "truncated": (truncated, "truncated"),
        "empty tissue": (white, "tissue"),
        "missing": (tmp / "missing.svs", "no such file"),
    }


@pytest.mark.parametrize("case", ["zero-byte", "unsupported", "truncated", "missing"])
def test_bad_slide_on_add_leaves_bundle_unchanged(
    case: str, fresh_bundle: Path, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    path, words = bad_files(tmp_path, generated_slide)[case]
    before = tree_digest(fresh_bundle)
    code, _, stderr = run("add", fresh_bundle, second_slide, path)  # a good slide and a bad one
    assert_one_line_error(code, stderr, path.name, words)
    assert tree_digest(fresh_bundle) == before
    with cbir.open_index(fresh_bundle) as ix:
        assert len(ix.slides) == 1


@pytest.mark.parametrize("case", ["zero-byte", "truncated"])
def test_bad_slide_on_build_writes_nothing(
    case: str, tmp_path: Path, generated_slide: Path
) -> None:
    path, words = bad_files(tmp_path, generated_slide)[case]
    out = tmp_path / "new-idx"
    code, _, stderr = run("build-index", generated_slide, path, "--out", out)
    assert_one_line_error(code, stderr, path.name, words)
    assert not out.exists()


@needs_shared_data
def test_truncated_real_svs(tmp_path: Path, fresh_bundle: Path) -> None:
    cut = tmp_path / "cut.svs"
    cut.write_bytes(CMU.read_bytes()[:1_000_000])
    code, _, stderr = run("add", fresh_bundle, cut)
    assert_one_line_error(code, stderr, "cut.svs", "truncated")


def test_query_smaller_than_a_tile(bundle: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 300, 3), np.uint8)).save(small)
    code, _, stderr = run("search", bundle, small)
    assert_one_line_error(code, stderr, "small.png", "smaller than the 112 px a side")


@pytest.mark.parametrize(
    ("region", "words"),
    [
        ("{slide}:0,0,100000,100000@20x", "runs past the slide's edge"),
        ("{slide}:100000,0,896,896@20x", "outside the slide"),
        ("{slide}:0,0,896,896@80x", "above the slide's base"),
        ("{slide}:0,0,896", "not a region"),
        ("{slide}:0,0,896,896@0x", "give one of at least 0.1x"),  # was "1 x 1 px"
        ("{slide}:0,0,896,896@-5x", "magnification -5x; give one of at least 0.1x"),
        ("{slide}:0,0,896,896@1e-300x", "give one of at least 0.1x"),
        ("{slide}:0,0,896,896@1.5.2x", "'1.5.2' is not a magnification"),
    ],
)
def test_bad_region_queries(bundle: Path, generated_slide: Path, region: str, words: str) -> None:
    code, _, stderr = run("search", bundle, "--region", region.format(slide=generated_slide))
    assert_one_line_error(code, stderr, words)


def test_bundle_of_another_recipe_is_refused(fresh_bundle: Path, second_slide: Path) -> None:
    before = tree_digest(fresh_bundle)
    code, _, stderr = run("add", fresh_bundle, second_slide, "--recipe", "stats-lsh64")
    assert_one_line_error(code, stderr, str(fresh_bundle), "stats-lsh32", "stats-lsh64")
    assert tree_digest(fresh_bundle) == before


def test_bundle_of_another_format_version_is_refused(
    fresh_bundle: Path, second_slide: Path, generated_slide: Path
) -> None:
    manifest = fresh_bundle / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 999
    manifest.write_text(json.dumps(data))
    before = tree_digest(fresh_bundle)
    code, _, stderr = run("search", fresh_bundle, "--region", f"{generated_slide}:0,0,448,448@20x")
    assert_one_line_error(code, stderr, str(fresh_bundle), "format version 999")
    code, _, stderr = run("add", fresh_bundle, second_slide)
    assert_one_line_error(code, stderr, "format version 999")
    assert tree_digest(fresh_bundle) == before


def test_not_a_bundle(tmp_path: Path) -> None:
    code, _, stderr = run("info", tmp_path)
    assert_one_line_error(code, stderr, str(tmp_path), "not an index bundle")


def test_failure_injected_mid_add_leaves_bundle_equal(
    fresh_bundle: Path, second_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cbir.index.binary import BinaryTileIndex

    before = tree_digest(fresh_bundle)

    def exploding_add(self: BinaryTileIndex, xb: np.ndarray, ids: np.ndarray) -> None:
        raise RuntimeError("disk on fire")  # after LMDB got the new slide's records

    monkeypatch.setattr(BinaryTileIndex, "add", exploding_add)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cbir.add_slides(fresh_bundle, [second_slide])
    assert tree_digest(fresh_bundle) == before
    with cbir.open_index(fresh_bundle) as ix:
        assert len(ix.slides) == 1 and ix.bundle.index.ntotal == ix.bundle.meta.tile_count()


def test_failure_while_publishing_leaves_bundle_equal(
    fresh_bundle: Path, second_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cbir.storage.writer

    before = tree_digest(fresh_bundle)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(cbir.storage.writer.os, "replace", failing_replace)
    with pytest.raises(BundleError, match=r"could not write the new generation \(power cut"):
        cbir.add_slides(fresh_bundle, [second_slide])
    assert tree_digest(fresh_bundle) == before


def test_process_killed_mid_add_leaves_last_good_bundle(
    fresh_bundle: Path, second_slide: Path
) -> None:
    """A hard kill (os._exit) after the new segment is written, before the publish."""
    manifest_before = (fresh_bundle / "manifest.json").read_bytes()
    script = (
        "import os, cbir.storage.writer as b\n"
        "from cbir.storage.artifacts import finish_segment\n"
        "orig = b.BundleWriter.commit\n"
        "def dying(self, *a, **k):\n"
        "    [finish_segment(s, self.state) for s in self.segments]\n"
        "    os._exit(9)\n"
        "b.BundleWriter.commit = dying\n"
        "import cbir\n"
        f"cbir.add_slides({str(fresh_bundle)!r}, [{str(second_slide)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == 9
    assert (fresh_bundle / "manifest.json").read_bytes() == manifest_before
    assert any(p.name.startswith(".tmp-") for p in fresh_bundle.iterdir())  # leftovers
    with cbir.open_index(fresh_bundle) as ix:
        assert len(ix.slides) == 1
    report = cbir.add_slides(fresh_bundle, [second_slide])  # the next writer sweeps them
    assert report.slides_total == 2
    assert not any(p.name.startswith(".tmp-") for p in fresh_bundle.iterdir())


def test_a_device_that_is_no_device_is_refused(bundle: Path, generated_slide: Path) -> None:
    """--device bogus was accepted by every command whose recipe runs no network."""
    region = f"{generated_slide}:0,0,896,896@20x"
    code, _, stderr = run("search", bundle, "--region", region, "--device", "bogus")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr  # a usage error: "cbir search: error: ..."
    assert "--device" in lines[0] and "'bogus'; valid: auto, cpu, cuda" in lines[0]
    code, _, stderr = run("search", bundle, "--region", region, "--device", "cpu")
    assert code == 0, stderr


def test_training_options_that_crashed_are_one_line(tmp_path: Path, generated_slide: Path) -> None:
    """Each of these was a Python traceback (exit 1), or (--base-recipe of an untrained
    network) a silent run on random features, found by a user trial."""
    from conftest import write_two_classes

    tiles = write_two_classes(tmp_path / "tiles", n=1)  # one tile per class
    cases = [
        (["train", "cnn", "--tiles", tiles, "--out", tmp_path / "c.pt", "--seed", "-5"], "--seed"),
        (["train", "lda", "--tiles", tiles, "--base-recipe", "stats-lsh32", "--out",
          tmp_path / "l.pt"], "lda needs more training tiles"),
        (["train", "scale", "--slides", generated_slide, "--out", tmp_path / "s.pt",
          "--arch", "foo"], "--arch"),
        (["train", "scale", "--slides", generated_slide, "--out", tmp_path / "s.pt",
          "--magnifications", "20"], "two or more magnifications"),
        (["evaluate", "--tiles", tiles, "--bits-sweep", "abc"], "--bits-sweep 'abc'"),
        (["train", "metric", "--tiles", tiles, "--dim", "100000", "--out", tmp_path / "m.pt"],
         "--dim"),
        (["train", "deephash", "--tiles", tiles, "--base-recipe", "cnn-flat", "--out",
          tmp_path / "d.pt"], "--base-recipe cnn-flat: its cnn network has no trained"),
    ]  # fmt: skip
    for argv, words in cases:
        code, _, stderr = run(*argv)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], (argv, stderr)
    assert not list(tmp_path.glob("*.pt"))
