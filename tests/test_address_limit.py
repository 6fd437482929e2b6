"""LMDB maps sized from the data (issue 21, item 10): with a 64 GiB address-space limit
(`ulimit -v`), a bundle opens, searches and takes an add; the previous 1 TiB map per
store made every bundle fail to open there, and the message blamed the store."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

import cbir
from cbir.slides.sample import sample_image, write_pyramidal_tiff

LIMIT = 64 << 30


def limited(*args: object) -> subprocess.CompletedProcess[str]:
    """The CLI in a process whose address space is limited to 64 GiB."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    cmd = [sys.executable, "-c", "from cbir.cli.main import app; app()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap, timeout=300)


def test_bundles_open_and_grow_under_an_address_space_limit(tmp_path: Path) -> None:
    img = sample_image()
    a = write_pyramidal_tiff(tmp_path / "a.tif", img, mpp=0.5)
    b = write_pyramidal_tiff(tmp_path / "b.tif", np.ascontiguousarray(np.rot90(img)), mpp=0.5)
    root = tmp_path / "idx"
    cbir.build_index([a], root, "stats-lsh32")  # written without a limit (1 TiB map)
    for args in (("info", root), ("search", root, "--region", f"{a}:0,0,896,896@20x", "-k", "2")):
        proc = limited(*args)
        assert proc.returncode == 0, proc.stderr
    proc = limited("add", root, b)  # a store written under the limit
    assert proc.returncode == 0, proc.stderr
    proc = limited("verify", root)
    assert proc.returncode == 0 and "ok, generation 2, 2 segments" in proc.stdout, proc.stderr
