"""A segment's float16 row file (cbir.storage.vector_rows): tile ids to rows through
runs of consecutive ids, rows read back as written, several segments at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbir.storage.vector_rows import ROWS_FILE, VectorRows, id_runs, rows_of, write_rows


def test_runs_of_consecutive_ids() -> None:
    ids = np.array([5, 6, 7, (1 << 32) + 0, (1 << 32) + 1, 9], np.int64)
    assert id_runs(ids, 10).tolist() == [[5, 3, 10], [1 << 32, 2, 13], [9, 1, 15]]
    assert id_runs(np.zeros(0, np.int64)).shape == (0, 3)


def test_rows_are_read_back_by_tile_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dim = 24
    blocks = []
    for sid in (3, 1, 7):  # slides in any order, one run or two each
        ids = (np.int64(sid) << 32) + np.r_[0:40, 50:60].astype(np.int64)
        blocks.append((rng.standard_normal((len(ids), dim)).astype(np.float32), ids))
    assert write_rows(tmp_path, blocks, dim) == 150
    rows = VectorRows(tmp_path, dim)
    assert rows.ntotal == 150
    x = np.concatenate([b[0] for b in blocks]).astype(np.float16).astype(np.float32)
    ids = np.concatenate([b[1] for b in blocks])
    pick = rng.permutation(len(ids))[:70]
    asked = np.concatenate([ids[pick], [(1 << 32) + 45, (9 << 32), -1]])  # 3 not stored
    got = rows_of([rows], asked, dim)
    assert np.array_equal(got[:70], x[pick])
    assert np.isnan(got[70:]).all()


def test_rows_of_several_segments(tmp_path: Path) -> None:
    dim, readers, want = 8, [], {}
    for s in range(3):
        folder = tmp_path / f"seg{s}"
        folder.mkdir()
        ids = (np.int64(s + 1) << 32) + np.arange(20, dtype=np.int64)
        x = np.full((20, dim), s + 1, np.float32) + np.arange(20)[:, None]
        write_rows(folder, [(x, ids)], dim)
        readers.append(VectorRows(folder, dim))
        want |= dict(zip(ids.tolist(), x, strict=True))
    asked = np.array(sorted(want)[::3], np.int64)
    got = rows_of(readers, asked, dim)
    assert np.array_equal(got, np.stack([want[i] for i in asked.tolist()]))


def test_an_empty_file_and_a_damaged_one(tmp_path: Path) -> None:
    write_rows(tmp_path, [], 4)
    rows = VectorRows(tmp_path, 4)
    assert rows.ntotal == 0 and np.isnan(rows_of([rows], np.array([1, 2]), 4)).all()
    write_rows(tmp_path, [(np.ones((3, 4), np.float32), np.arange(3))], 4)
    with open(tmp_path / ROWS_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ValueError, match="not rows of 4 float16"):
        VectorRows(tmp_path, 4)
