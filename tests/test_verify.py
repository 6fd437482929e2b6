"""`cbir verify` (issue 21, item 4): every checksum, row counts and the LMDB read
through; exit 1 with one line per damaged file. Searches refuse a damaged segment in
one line instead of a traceback or silently wrong hits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.slides.sample import sample_image, write_pyramidal_tiff

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    img = sample_image()
    a = write_pyramidal_tiff(root / "a.tif", img, mpp=0.5)
    b = write_pyramidal_tiff(root / "b.tif", np.ascontiguousarray(np.rot90(img)), mpp=0.5)
    cbir.build_index([a], root / "idx", "stats-lsh32")
    cbir.add_slides(root / "idx", [b])
    return root / "idx"


@pytest.fixture()
def copy(tmp_path: Path, bundle: Path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(bundle, out)
    return out


def flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def verify(root: Path, *extra: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["verify", str(root), *extra])
    return r.exit_code, r.stdout, r.stderr


def test_a_whole_bundle_verifies(bundle: Path) -> None:
    code, out, err = verify(bundle)
    assert code == 0 and err == "" and "ok, generation 2, 2 segments" in out
    code, out, _ = verify(bundle, "--json")
    report = json.loads(out)
    assert code == 0 and report["damaged"] == [] and report["files"] >= 5


@pytest.mark.parametrize(
    "rel", ["seg-000001/tiles.fbin", "seg-000002/meta.lmdb/data.mdb", "state-000001/pipeline.npz"]
)
def test_a_flipped_byte_is_named(copy: Path, rel: str) -> None:
    flip(copy / rel)
    code, _, err = verify(copy)
    lines = err.splitlines()
    assert code == 1 and lines == [
        f"cbir: damaged: {copy}/{rel}: sha256 differs from the manifest's"
    ]
    # a search refuses it in one line naming the file (no traceback, no wrong hits)
    Image.fromarray(sample_image()[:224, :224]).save(copy.parent / "q.png")
    r = runner.invoke(app, ["search", str(copy), str(copy.parent / "q.png")])
    assert r.exit_code == 2 and rel.split("/")[-1] in r.stderr and len(r.stderr.splitlines()) == 1


def test_every_damaged_file_gets_its_line(copy: Path) -> None:
    flip(copy / "seg-000001" / "tiles.fbin")
    (copy / "seg-000002" / "tiles.fbin").unlink()
    data = copy / "seg-000002" / "meta.lmdb" / "data.mdb"
    data.write_bytes(data.read_bytes()[:4096])
    size = json.loads((copy / "manifest.json").read_text())["segments"][1]["sizes"]
    code, _, err = verify(copy)
    assert code == 1
    assert err.splitlines() == [
        f"cbir: damaged: {copy}/seg-000001/tiles.fbin: sha256 differs from the manifest's",
        f"cbir: damaged: {copy}/seg-000002/meta.lmdb/data.mdb: 4096 bytes, the manifest says "
        f"{size['meta.lmdb/data.mdb']}",
        f"cbir: damaged: {copy}/seg-000002/tiles.fbin: missing",
    ]


def test_a_broken_manifest_is_one_damaged_line(copy: Path) -> None:
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 3])
    code, _, err = verify(copy)
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"cbir: damaged: {copy}/manifest.json: not valid JSON")


def test_row_counts_are_compared(copy: Path) -> None:
    """A manifest that says a segment has fewer rows than its index (checksums intact)."""
    m = json.loads((copy / "manifest.json").read_text())
    seg = m["segments"][1]
    seg["artifacts"]["codes"]["rows"] -= 1
    m["counts"]["tiles"] -= 1
    (copy / "manifest.json").write_text(json.dumps(m))
    code, _, err = verify(copy)
    assert code == 1 and "seg-000002" in err and "rows" in err and len(err.splitlines()) == 1


def test_not_a_directory_is_one_line(tmp_path: Path) -> None:
    code, _, err = verify(tmp_path / "nothing")
    assert code == 2 and err.startswith("cbir: error:") and len(err.splitlines()) == 1


def test_an_older_manifest_put_back_is_reported(copy: Path) -> None:
    """The manifest as it was before the add (generation 1, one segment): seg-000002 is
    newer than it, so it is an older copy; verify names the manifest, writers refuse."""
    m = json.loads((copy / "manifest.json").read_text())
    first = m["segments"][0]
    m.update(generation=1, segments=[first])
    m["counts"] = {"slides": first["slides"], "tiles": first["artifacts"]["codes"]["rows"]}
    (copy / "manifest.json").write_text(json.dumps(m))
    code, _, err = verify(copy)
    assert code == 1 and err.splitlines() == [
        f"cbir: damaged: {copy}/manifest.json: seg-000002 is newer than the manifest "
        "(generation 1): the manifest is an older copy; restore the newest one (nothing was "
        "changed)"
    ]


FORMAT2 = Path(__file__).parent / "data" / "bundle-format2"


@pytest.mark.parametrize("damage", ["truncated-lmdb", "codes-header"])
def test_a_damaged_format2_bundle_is_not_ok(tmp_path: Path, damage: str) -> None:
    """A format-2 bundle has no checksums but its pipeline's: verify reads its LMDB and
    opens it as a reader does (it said "ok" where info and search refused it)."""
    root = tmp_path / "f2"
    shutil.copytree(FORMAT2, root)
    assert verify(root)[0] == 0
    if damage == "truncated-lmdb":
        with open(root / "gen-000002/meta.lmdb/data.mdb", "r+b") as fh:
            fh.truncate(32768)
        words = "gen-000002/meta.lmdb: truncated"
    else:
        with open(root / "gen-000002/tiles.fbin", "r+b") as fh:
            fh.seek(8)
            fh.write(b"\xff\xff\xff\xff")
        words = "gen-000002: unreadable codes index"
    code, _, err = verify(root)
    assert code == 1 and len(err.splitlines()) == 1 and words in err, err


def test_a_truncated_lmdb_without_checksums_is_a_line_not_a_sigbus(copy: Path) -> None:
    """A manifest without checksums or sizes (both optional) over a truncated LMDB: the
    pages are checked before the map is read (verify died of SIGBUS)."""
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["segments"]:
        entry["sha256"], entry["sizes"] = {}, {}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    data = copy / "seg-000002/meta.lmdb/data.mdb"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    code, _, err = verify(copy)
    assert code == 1 and "seg-000002/meta.lmdb: truncated" in err, err


def test_generations_past_999999_keep_working(copy: Path) -> None:
    """Every label, add and remove publishes a generation; names are seg-<6+ digits>:
    past 999,999 writers went on refusing the bundle ("not a segment of generation")."""
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["generation"] = 999_999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with cbir.open_index(copy) as ix:
        name = next(iter(ix.slides.values())).info.name
    for _ in range(2):
        cbir.label_slide(copy, name, {"diagnosis": "A"})
    assert runner.invoke(app, ["compact", str(copy)]).exit_code == 0
    cbir.label_slide(copy, name, {"diagnosis": "B"})
    code, out, err = verify(copy)
    assert code == 0 and "generation 1000003" in out, err
    assert any(p.name.startswith("seg-10000") for p in copy.iterdir())
