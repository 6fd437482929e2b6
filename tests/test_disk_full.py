"""A full disk while a writer writes (issue 21, item 3): one line naming the bundle and
"no space left", exit 2, the bundle byte-identical and still searchable."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cbir
from cbir.cli.main import app
from cbir.slides.sample import sample_image, write_pyramidal_tiff
from conftest import tree_digest

runner = CliRunner()


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("full-slides")
    img = sample_image()
    a = write_pyramidal_tiff(root / "a.tif", img, mpp=0.5)
    b = write_pyramidal_tiff(root / "b.tif", np.ascontiguousarray(np.rot90(img)), mpp=0.5)
    return a, b


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_enospc_in_the_faiss_write_is_one_line(
    tmp_path: Path, slides: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "idx"
    cbir.build_index([slides[0]], root, "stats-lsh32")
    before = tree_digest(root)

    def full(path: Path, data: np.ndarray) -> None:
        with open(path, "wb") as fh:  # a partial file, as a real full disk leaves
            fh.write(bytes(np.asarray(data)[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("cbir.index.faiss_io.write_serialized", full)
    result = runner.invoke(app, ["add", str(root), str(slides[1])])
    line = _one_line(result.stderr)
    assert result.exit_code == 2 and line.startswith("cbir: error: ")
    assert str(root) in line and "no space left" in line
    assert tree_digest(root) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    with cbir.open_index(root) as index:
        assert len(index.slides) == 1


@pytest.fixture()
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("leave_kib", [8, 32, 64, 96, 128, 192])
def test_a_real_full_filesystem_is_one_line(
    tiny_fs: Path, slides: tuple[Path, Path], leave_kib: int
) -> None:
    """The device is filled to leave `leave_kib` KiB: each size runs out in another of the
    add's writes (LMDB pages, the Faiss index, the checksummed copy, the manifest). The
    add either fits or is refused in one line, the bundle unchanged."""
    root = tiny_fs / "idx"
    cbir.build_index([slides[0]], root, "stats-lsh32")
    before = tree_digest(root)
    free = shutil.disk_usage(tiny_fs).free
    with open(tiny_fs / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_kib * 1024))
    result = runner.invoke(app, ["add", str(root), str(slides[1])])
    (tiny_fs / "filler").unlink()
    if result.exit_code == 0:
        expected = 2
    else:
        line = _one_line(result.stderr)
        assert result.exit_code == 2 and str(root) in line and "no space left" in line, line
        assert tree_digest(root) == before
        expected = 1
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    with cbir.open_index(root) as index:
        assert len(index.slides) == expected
