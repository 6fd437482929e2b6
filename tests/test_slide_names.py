"""One way to name an indexed slide everywhere (cbir.storage.slide_names): by its path,
or by its bare file name when unique (a path elsewhere never names it); a file that is
not indexed is a slide to read where a command reads slides; unknown and ambiguous names
refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.errors import CbirError, QueryError
from cbir.storage.bundle import Bundle
from cbir.storage.slide_names import find_slide, lookup_slide

FORMAT2 = Path(__file__).parent / "data" / "bundle-format2"
runner = CliRunner()


@pytest.fixture()
def records(tmp_path: Path) -> list:
    root = tmp_path / "idx"
    shutil.copytree(FORMAT2, root)
    with Bundle.open(root) as bundle:
        return bundle.meta.slide_list()


def test_by_path_or_unique_name(records: list, tmp_path: Path) -> None:
    first = records[0]
    assert find_slide(records, first.info.path, "idx") == first
    assert find_slide(records, first.info.name, "idx") == first
    with pytest.raises(QueryError, match=r"not the path of a slide of idx \(indexed from /"):
        find_slide(records, f"elsewhere/{first.info.name}", "idx", QueryError)
    with pytest.raises(QueryError, match=r"^nope.tif: not a slide of idx \(it has generated"):
        find_slide(records, "nope.tif", "idx", QueryError)


def test_an_ambiguous_name_asks_for_the_path(records: list) -> None:
    twin = records[0].model_copy(
        update={"slide_id": 99, "info": records[0].info.model_copy(update={"path": "/b/x.tif"})}
    )
    with pytest.raises(CbirError, match="several slides in idx have this name .*give the path"):
        find_slide([*records, twin], records[0].info.name, "idx")


def test_an_existing_file_not_indexed_is_read(records: list, tmp_path: Path) -> None:
    other = tmp_path / records[0].info.name  # same name, another file
    other.write_bytes(b"x")
    assert lookup_slide(records, str(other), "idx", files=True) is None
    with pytest.raises(CbirError, match="not the path of a slide of idx"):  # not its twin
        lookup_slide(records, str(other), "idx")
    with pytest.raises(CbirError, match="no such file, and not a slide of idx"):
        lookup_slide(records, "nope.tif", "idx", files=True)


def test_every_command_says_the_same(tmp_path: Path) -> None:
    """label, remove, --slides, --region and --slide refuse an unknown name alike."""
    root = tmp_path / "idx"
    shutil.copytree(FORMAT2, root)
    assert runner.invoke(app, ["upgrade", str(root)]).exit_code == 0  # writers need format 3
    commands = [
        ["label", str(root), "nope.tif", "a=b"],
        ["remove", str(root), "nope.tif"],
        ["search", str(root), "--region", "nope.tif:0,0,500,500@20x", "--slides", "second.tif"],
        ["search", str(root), "--slide", "nope.tif"],
        ["search", str(root), "--slide", "second.tif", "--slides", "nope.tif"],
    ]
    for argv in commands:
        done = runner.invoke(app, argv)
        assert done.exit_code != 0, argv
        assert "nope.tif:" in done.output and "a slide of" in done.output, (argv, done.output)
        assert "generated.tif" in done.output, (argv, done.output)  # names what it has


def test_remove_and_label_never_take_a_namesake(tmp_path: Path) -> None:
    """`remove b /elsewhere/x.tif` is refused, and the bundle keeps x.tif indexed from
    another folder (it used to remove it: a path's file name matched)."""
    root = tmp_path / "idx"
    shutil.copytree(FORMAT2, root)
    assert runner.invoke(app, ["upgrade", str(root)]).exit_code == 0
    with Bundle.open(root) as bundle:
        before = [r.info.path for r in bundle.meta.slide_list()]
    elsewhere = str(tmp_path / "elsewhere" / Path(before[0]).name)
    for argv in (["remove", str(root), elsewhere], ["label", str(root), elsewhere, "a=b"]):
        done = runner.invoke(app, argv)
        assert done.exit_code == 2, (argv, done.output)
        assert "not the path of a slide of" in done.output and before[0] in done.output
    with Bundle.open(root) as bundle:
        records = bundle.meta.slide_list()
    assert [r.info.path for r in records] == before
    assert all("a" not in r.labels for r in records)
