"""Faiss binary index: IVF recall vs exact, ids, removal, persistence, tie order."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from cbir.index.binary import BinaryTileIndex, auto_nlist
from cbir.recipes import IndexConfig


def clustered_codes(n: int, bits: int, clusters: int, flip: float, seed: int) -> np.ndarray:
    """(n, bits / 8) uint8 codes: random centres, each bit flipped with probability `flip`."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (clusters, bits), dtype=np.uint8)
    bitsarr = centres[rng.integers(0, clusters, n)]
    bitsarr ^= (rng.random((n, bits)) < flip).astype(np.uint8)
    return np.packbits(bitsarr, axis=1, bitorder="little")


def tie_aware_recall(D_exact: np.ndarray, D_approx: np.ndarray, k: int) -> float:
    """Fraction of approximate top-k results no farther than the exact k-th distance."""
    kth = D_exact[:, k - 1 : k]
    return float((D_approx[:, :k] <= kth).mean())


@pytest.mark.slow
def test_ivf_recall_at_10_against_exact_on_100k_codes() -> None:
    n, bits = 120_000, 32
    xb = clustered_codes(n, bits, clusters=2000, flip=0.06, seed=0)
    rng = np.random.default_rng(1)
    noise = np.packbits(rng.random((500, bits)) < 0.03, axis=1, bitorder="little")
    xq = xb[rng.choice(n, 500, replace=False)] ^ noise  # collection codes, a few bits flipped
    ids = np.arange(n, dtype=np.int64) * 3 + 5
    cfg = IndexConfig(ivf_threshold=100_000, nprobe=32)
    ivf = BinaryTileIndex.for_collection(bits, cfg, xb, ids)
    assert ivf.kind == "ivf" and ivf.nlist == auto_nlist(n)
    exact = faiss.IndexBinaryFlat(bits)
    exact.add(xb)
    D_exact, _ = exact.search(xq, 10)
    D_ivf, I_ivf = ivf.search(xq, 10)
    assert set(np.unique(I_ivf[I_ivf >= 0]) % 3) == {2}  # our ids came back, not positions
    assert tie_aware_recall(D_exact, D_ivf, 10) >= 0.95


def test_small_collections_get_an_exact_index() -> None:
    xb = clustered_codes(1000, 64, 10, 0.1, 3)
    index = BinaryTileIndex.for_collection(64, IndexConfig(), xb, np.arange(1000, dtype=np.int64))
    assert index.kind == "flat"
    D, I = index.search(xb[:5], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(5))
    assert (D[:, 0] == 0).all()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_remove_and_persist(kind: str, tmp_path: Path) -> None:
    n = 5000
    xb = clustered_codes(n, 32, 50, 0.05, 4)
    ids = (np.int64(7) << 32) + np.arange(n, dtype=np.int64)
    cfg = IndexConfig(ivf_threshold=1 if kind == "ivf" else 10**9, nlist=64, nprobe=64)
    index = BinaryTileIndex.for_collection(32, cfg, xb, ids)
    assert index.kind == kind
    assert index.remove(ids[:100]) == 100
    index.save(tmp_path / "x.fbin")
    loaded = BinaryTileIndex.load(tmp_path / "x.fbin", nprobe=64)
    assert loaded.kind == kind and loaded.ntotal == n - 100
    _, I = loaded.search(xb[:100], 5)
    assert not np.isin(I, ids[:100]).any()
    D, I = loaded.search(xb[100:110], 1)
    assert (D[:, 0] == 0).all()


def test_ties_are_broken_by_smaller_id() -> None:
    code = np.array([[0b1010_1010] * 4], np.uint8)
    xb = np.repeat(code, 50, axis=0)
    ids = np.arange(50, dtype=np.int64)[::-1] * 10  # inserted in decreasing id order
    index = BinaryTileIndex.for_collection(32, IndexConfig(), xb, ids)
    D, I = index.search_tie_ordered(code, 5)
    np.testing.assert_array_equal(I, [0, 10, 20, 30, 40])
    assert (D == 0).all()


def test_tie_ordered_search_without_range_search_widens() -> None:
    """An exact index Faiss cannot range-search (an HNSW `exact_factory`) still gives the
    top k with ties by id, by widening; a Flat one by range search: the same answer."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (3000, 1), dtype=np.uint8)  # 8-bit codes: heavy ties
    ids = np.arange(3000, dtype=np.int64)
    flat = BinaryTileIndex.for_collection(8, IndexConfig(exact_factory="BFlat"), x, ids)
    hnsw = BinaryTileIndex.for_collection(8, IndexConfig(exact_factory="BHNSW32"), x, ids)
    assert flat.ranges and not hnsw.ranges
    for q in x[:5]:
        D, I = flat.search_tie_ordered(q[None], 5)
        d = np.unpackbits(x ^ q, axis=1).sum(axis=1)
        order = np.lexsort((ids, d))[:5]
        assert D.tolist() == d[order].tolist() and I.tolist() == ids[order].tolist()
        Dh, _ = hnsw.search_tie_ordered(q[None], 5)
        assert Dh.tolist() == D.tolist()  # HNSW is approximate: distances, not ids


@pytest.mark.parametrize("kind", ["binary", "float"])
def test_segments_probing_more_lists_than_exist_search_each_alone(kind: str) -> None:
    """Faiss probes min(nprobe, nlist) lists, so one quantizer search of nprobe lists
    cannot be shared with the segments (its rows would be read at the wrong width): with
    nprobe > nlist each segment searches alone, and a batch equals its queries one by one."""
    from cbir.index.float import FloatTileIndex
    from cbir.index.segmented import Part, SegmentedIndex

    rng = np.random.default_rng(8)
    n, cfg = 12_000, IndexConfig(ivf_threshold=1, nlist=16, nprobe=32)  # (a float IVF: >= 9,984)
    if kind == "binary":
        xb = clustered_codes(n, 64, 40, 0.05, 5)
        template = BinaryTileIndex.template(64, cfg, xb)
    else:
        xb = rng.standard_normal((n, 16)).astype(np.float32)
        float_cfg = cfg.model_copy(update={"float_factory": "IVF{nlist},Flat"})
        template = FloatTileIndex.template(16, float_cfg, xb)
    parts = []
    for half in (slice(0, n // 2), slice(n // 2, n)):
        seg = template.emptied()
        seg.add(xb[half], np.arange(n, dtype=np.int64)[half])
        parts.append(Part(seg))
    index = SegmentedIndex(parts, kind, 32, 16, 64 if kind == "binary" else 16)
    assert all(p.index.nlist == 16 for p in parts)
    xq = xb[:6]
    assert index._assigned(xq) is None
    D, I = index.search(xq, 10)
    for i in range(len(xq)):
        _, I1 = index.search(xq[i : i + 1], 10)
        np.testing.assert_array_equal(I1[0], I[i])
