"""A writer refused by a damaged bundle touches nothing (issue 21, item 2): for each
damaged state below, every writer (`add`, `remove`, `label`, `compact`, `rebuild`,
`upgrade`, `build-index --overwrite` of a missing slide) exits 2 with one line naming
the bundle, and every file of the bundle is byte-identical afterwards."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cbir.cli.main import app
from cbir.slides.sample import sample_image, write_pyramidal_tiff
from conftest import tree_digest

runner = CliRunner()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refused-slides")
    img = sample_image()
    return {
        "a": write_pyramidal_tiff(root / "a.tif", img, mpp=0.5),
        "b": write_pyramidal_tiff(root / "b.tif", np.ascontiguousarray(np.rot90(img)), mpp=0.5),
        "c": write_pyramidal_tiff(root / "c.tif", np.ascontiguousarray(img[:, ::-1]), mpp=0.5),
    }


def cli(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, slides: dict[str, Path]) -> dict[str, Path]:
    """`one`: slide a (generation 1); `two`: then b added (generation 2), with the
    generation-1 manifest kept beside it as `two.gen1.json`."""
    root = tmp_path_factory.mktemp("refused-bundles")
    one = root / "one"
    assert cli("build-index", slides["a"], "--out", one, "--recipe", "stats-lsh32")[0] == 0
    two = root / "two"
    shutil.copytree(one, two)
    shutil.copyfile(two / "manifest.json", root / "two.gen1.json")
    assert cli("add", two, slides["b"])[0] == 0
    return {"one": one, "two": two, "gen1": root / "two.gen1.json"}


def _edit(root: Path, fn: Callable[[dict], None]) -> None:
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m, indent=2))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _phantom_tombstone(m: dict) -> None:
    seg = m["segments"][0]
    seg["dead_slides"] = [m["next_slide_id"]]
    m["next_slide_id"] += 1
    m["counts"]["slides"] -= 1


#: Damaged states: (name, source bundle, damage). Each leaves a bundle a writer must
#: refuse before it touches a file.
STATES: list[tuple[str, str, Callable[[Path, dict[str, Path]], None]]] = [
    ("manifest truncated", "two", lambda r, b: _truncate(r / "manifest.json")),
    ("manifest empty", "two", lambda r, b: (r / "manifest.json").write_text("")),
    ("manifest a JSON list", "two", lambda r, b: (r / "manifest.json").write_text("[]")),
    ("manifest not UTF-8", "two", lambda r, b: (r / "manifest.json").write_bytes(b"\xff\xfe{")),
    (
        "manifest of a future format",
        "two",
        lambda r, b: _edit(r, lambda m: m.update(format_version=9)),
    ),
    (
        "manifest names a missing segment",
        "two",
        lambda r, b: _edit(r, lambda m: m["segments"][0].update(name="seg-000001-7")),
    ),
    ("segment directory deleted", "two", lambda r, b: shutil.rmtree(r / "seg-000001")),
    ("state directory deleted", "two", lambda r, b: shutil.rmtree(r / "state-000001")),
    (
        "state names a missing directory",
        "two",
        lambda r, b: _edit(r, lambda m: m.update(state="state-000002")),
    ),
    (
        "older manifest put back",
        "two",
        lambda r, b: shutil.copyfile(b["gen1"], r / "manifest.json"),
    ),
    ("segment index truncated", "two", lambda r, b: _truncate(r / "seg-000002" / "tiles.fbin")),
    ("segment index deleted", "two", lambda r, b: (r / "seg-000002" / "tiles.fbin").unlink()),
    (
        "segment LMDB truncated",
        "two",
        lambda r, b: _truncate(r / "seg-000001" / "meta.lmdb" / "data.mdb", 0.3),
    ),
    ("state file altered", "two", lambda r, b: _flip(r / "state-000001" / "pipeline.npz", 100)),
    ("negative next_slide_id", "two", lambda r, b: _edit(r, lambda m: m.update(next_slide_id=-3))),
    ("tombstone of an unknown slide", "two", lambda r, b: _edit(r, _phantom_tombstone)),
    (
        "segment name climbs out",
        "two",
        lambda r, b: _edit(r, lambda m: m["segments"][0].update(name="../one/seg-000001")),
    ),
    (
        "counts that do not add up",
        "two",
        lambda r, b: _edit(r, lambda m: m["counts"].update(tiles=1)),
    ),
    (
        "negative rows",
        "one",
        lambda r, b: _edit(r, lambda m: m["segments"][0]["artifacts"]["codes"].update(rows=-1)),
    ),
    ("the lock is a folder", "two", lambda r, b: _lock_folder(r)),
    (
        "manifest checksums a missing file",
        "two",
        lambda r, b: _edit(r, lambda m: m["segments"][0]["sha256"].update({"x.bin": "0" * 64})),
    ),
    ("encoder bits that its state lacks", "two", lambda r, b: _edit(r, _more_bits)),
]


def _lock_folder(root: Path) -> None:
    (root / ".lock").unlink(missing_ok=True)
    (root / ".lock").mkdir()


def _more_bits(m: dict) -> None:
    m["encoder"]["bits"] = 64
    m["recipe"]["encoder"]["params"]["bits"] = 64


#: Writers: (name, argv after the bundle path is substituted for {B}).
WRITERS: dict[str, Callable[[Path, dict[str, Path]], list[object]]] = {
    "add": lambda r, s: ["add", r, s["c"]],
    "remove": lambda r, s: ["remove", r, s["a"]],
    "label": lambda r, s: ["label", r, "a.tif", "kind=tumour"],
    "compact": lambda r, s: ["compact", r],
    "rebuild": lambda r, s: ["rebuild", r],
    "overwrite": lambda r, s: ["build-index", r.parent / "missing.tif", "--out", r, "--overwrite"],
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("state", STATES, ids=[s[0] for s in STATES])
def test_refused_writer_touches_nothing(
    tmp_path: Path,
    built: dict[str, Path],
    slides: dict[str, Path],
    state: tuple[str, str, Callable[[Path, dict[str, Path]], None]],
    writer: str,
) -> None:
    _, source, damage = state
    root = tmp_path / "idx"
    shutil.copytree(built[source], root)
    damage(root, built)
    before = tree_digest(root)
    names = sorted(p.name for p in root.rglob("*") if p.name not in (".lock", "lock.mdb"))
    code, stderr = cli(*WRITERS[writer](root, slides))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("cbir: error: "), stderr
    assert str(root) in lines[0] or "missing.tif" in lines[0], lines[0]
    assert "[Errno" not in lines[0], lines[0]  # in words, not an OSError's repr
    assert tree_digest(root) == before, lines[0]
    after = sorted(p.name for p in root.rglob("*") if p.name not in (".lock", "lock.mdb"))
    assert after == names


def test_a_refused_write_on_a_format2_bundle_leaves_no_lock(tmp_path: Path) -> None:
    root = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "bundle-format2", root)
    before = sorted(p.name for p in root.iterdir())
    code, stderr = cli("label", root, "generated.tif", "kind=x")
    assert code == 2 and "cbir upgrade" in stderr
    assert sorted(p.name for p in root.iterdir()) == before  # no .lock left behind


def test_a_killed_writers_published_looking_directory_is_swept_not_feared(
    tmp_path: Path, built: dict[str, Path], slides: dict[str, Path]
) -> None:
    """A writer killed after moving its segment into place but before the manifest
    replace leaves a directory newer than the manifest with the unpublished marker: the
    next writer sweeps it instead of refusing."""
    root = tmp_path / "idx"
    shutil.copytree(built["two"], root)
    dead = root / "seg-000003"
    shutil.copytree(root / "seg-000002", dead)
    (dead / ".unpublished").touch()
    code, stderr = cli("add", root, slides["c"])
    assert code == 0, stderr
    assert not dead.exists()
    names = {s["name"] for s in json.loads((root / "manifest.json").read_text())["segments"]}
    assert all((root / n).is_dir() and not (root / n / ".unpublished").exists() for n in names)
