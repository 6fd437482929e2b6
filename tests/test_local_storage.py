"""Compact local features (issue 13 part 4): an IVF index of PQ codes as the only copy
of the descriptors, quantised keypoints in LMDB, merges that copy codes, and bundles
written before (float16 descriptors in LMDB) read as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

import cbir
from cbir.index.local import (
    MIN_PQ_TRAIN,
    LocalCodeIndex,
    auto_nlist,
    load_local_index,
    local_factory,
    local_index_template,
)
from cbir.recipes import LocalConfig
from cbir.search.verified import verify_hits
from cbir.slides.sample import sample_image
from cbir.storage.local_points import decode_points, encode_points
from cbir.storage.state import SegmentStage

FIXTURE = Path(__file__).parent / "data" / "bundle-delf-v3"


def unit_rows(n: int, seed: int, d: int = 40) -> np.ndarray:
    """(n, d) unit vectors around 64 cluster centres (descriptor-like structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d))
    x = centres[rng.integers(64, size=n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_factory_fills_nlist_and_keeps_exact_codes_when_small() -> None:
    cfg = LocalConfig()
    assert auto_nlist(1_000_000) == 4096 and auto_nlist(10) == 1
    assert local_factory(cfg, 200_000) == "IVF2048,PQ20"
    assert local_factory(cfg, MIN_PQ_TRAIN - 1) == f"IVF{auto_nlist(MIN_PQ_TRAIN - 1)},Flat"
    assert local_factory(cfg.model_copy(update={"nlist": 64}), 50_000) == "IVF64,PQ20"
    # a fixed factory too: no more lists than the rows train, exact codes below a PQ's
    fixed = cfg.model_copy(update={"float_factory": "IVF1024,PQ20"})
    assert local_factory(fixed, 200) == "IVF4,Flat" and local_factory(fixed, 1) == "IVF1,Flat"
    assert local_factory(fixed, 10**6) == "IVF1024,PQ20"
    assert local_factory(cfg.model_copy(update={"float_factory": "HNSW32,Flat"}), 5) == (
        "HNSW32,Flat"
    )


def test_pq_codes_are_the_only_copy_and_merges_copy_them(tmp_path: Path) -> None:
    x = unit_rows(12_000, seed=0)
    ids = (np.arange(len(x), dtype=np.int64) // 700 << 10) | (np.arange(len(x)) % 700)
    empty = local_index_template(LocalConfig(nlist=64), x)
    assert isinstance(empty, LocalCodeIndex) and empty.code_size == 21  # list byte + PQ20
    index = empty.emptied()
    index.add(x, ids)
    index.save(tmp_path / "a.faiss")
    fixed = len(faiss.serialize_index(empty.index))  # centroids and PQ tables
    # code + id a row, a list size a list
    assert (tmp_path / "a.faiss").stat().st_size - fixed == len(x) * 28 + 64 * 8

    # a merge copies codes: the same rows, bit for bit, and the same search results
    codes, got_ids = load_local_index(tmp_path / "a.faiss", LocalConfig()).rows()
    merged = empty.emptied()
    merged.add(codes[::2], got_ids[::2])
    merged.add(codes[1::2], got_ids[1::2])
    q = unit_rows(50, seed=1)
    D0, I0 = index.search(q, 10)
    D1, I1 = merged.search(q, 10)
    assert np.array_equal(I0, I1) and np.array_equal(D0, D1)

    # descriptors are decoded from the codes, by id, close to the originals
    pick = ids[[5, 7_000, 11_999]]
    rec = merged.reconstruct(pick)
    assert np.array_equal(rec, empty.decode(empty.encode(x[[5, 7_000, 11_999]])))
    assert np.linalg.norm(rec - x[[5, 7_000, 11_999]], axis=1).max() < 0.35
    merged.save(tmp_path / "b.faiss")  # the id map used to decode is not written
    assert (tmp_path / "b.faiss").stat().st_size == (tmp_path / "a.faiss").stat().st_size
    # no precomputed nlist x 20 x 256 table is kept in memory, loaded or trained
    back = load_local_index(tmp_path / "b.faiss", LocalConfig(nlist=64))
    for ix in (back, empty, merged):
        assert ix.index.use_precomputed_table == -1 and ix.index.precomputed_table.size() == 0
    assert np.array_equal(back.search(q, 10)[1], I0)


def test_keypoints_are_quantised_within_half_a_step() -> None:
    rng = np.random.default_rng(0)
    pts = np.column_stack(
        [
            50_000 + rng.uniform(-40, 940, 1000),
            80_000 + rng.uniform(-40, 940, 1000),
            rng.choice([0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0], 1000),
            rng.uniform(0, 12, 1000),
        ]
    ).astype(np.float32)
    raw = encode_points(pts)
    assert len(raw) == 8 + 24 + 8 * 1000
    got, desc = decode_points(raw, with_descriptors=True)
    assert desc is None and got.dtype == np.float32 and got.shape == (1000, 4)
    assert np.abs(got[:, :2] - pts[:, :2]).max() < 0.02  # level-0 px (float32 at 8e4: 0.008)
    assert np.abs(got[:, 2] / pts[:, 2] - 1).max() < 1e-3
    assert np.abs(got[:, 3] - pts[:, 3]).max() < 0.01
    empty, _ = decode_points(encode_points(np.zeros((0, 4), np.float32)), True)
    assert empty.shape == (0, 4)


def test_bundle_with_float16_descriptors_in_lmdb_reads_as_before(tmp_path: Path) -> None:
    """A bundle of the cbir before compact local features (HNSW-era layout: float32
    keypoints and float16 descriptors in LMDB, a float index) gives the hits it gave."""
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    expected = json.loads((FIXTURE.parent / "bundle-delf-v3-expected.json").read_text())
    y0, y1, x0, x1 = expected["query"]
    img = sample_image()
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    q = np.ascontiguousarray(half[y0:y1, x0:x1])
    got = {}
    with cbir.open_index(root, device="cpu") as ix:
        for name, verify in (("votes", True), ("global", False)):
            r = ix.search(q, k=3, verify=verify)
            got[name] = [
                [h.slide, h.magnification, h.x, h.y, h.w, h.h, h.inliers, h.affine] for h in r.hits
            ]
        coarse = ix.search(q, k=4, verify=False).hits
        hits = verify_hits(ix.collection, ix.bundle.local.query(q), coarse, 4)
        got["verified_coarse"] = [[h.x, h.y, h.inliers, h.matches, h.affine] for h in hits]
    # Slides, places, sizes and inlier counts are exact; the fitted affines are compared
    # to 1e-4 (their last digits differ between machines' BLAS and OpenCV builds).
    assert _without_affines(got) == _without_affines(expected["hits"])
    for name, rows in got.items():
        for mine, theirs in zip(rows, expected["hits"][name], strict=True):
            a, b = mine[-1], theirs[-1]
            assert (a is None) == (b is None)
            if a is not None:
                assert np.allclose(a, b, rtol=1e-4, atol=1e-3), (name, a, b)


def _without_affines(hits: dict[str, list[list]]) -> dict[str, list[list]]:
    return {name: [row[:-1] for row in rows] for name, rows in hits.items()}


@pytest.mark.parametrize("factory", ["IVF{nlist},PQ20", "HNSW32,Flat"])
def test_local_index_kinds_load_back(tmp_path: Path, factory: str) -> None:
    cfg = LocalConfig(float_factory=factory)
    x = unit_rows(MIN_PQ_TRAIN, seed=2)
    index = local_index_template(cfg, x).emptied()
    index.add(x, np.arange(len(x), dtype=np.int64))
    index.save(tmp_path / "i.faiss")
    back = load_local_index(tmp_path / "i.faiss", cfg)
    assert type(back) is type(index) and back.ntotal == len(x)
    assert np.allclose(back.reconstruct(np.array([3, 7])), index.reconstruct(np.array([3, 7])))


def test_small_bundle_gets_pq_codes_once_it_has_enough_features(
    tmp_path: Path,
    generated_slide: Path,
    second_slide: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exact codes for a first slide too small to train a PQ on; the add that brings the
    collection past the threshold retrains the local index on every live feature and
    codes them all as PQ, and search still finds a crop at its place."""
    from test_delf import delf_recipe

    import cbir.index.local as li
    from cbir.indexer import add_slides, build_index
    from cbir.slides import open_slide

    recipe = delf_recipe(tmp_path, "[20]", max_features=100)
    root = tmp_path / "idx"
    build_index([generated_slide], root, recipe, device="cpu", untrained=True)
    with cbir.open_index(root, device="cpu") as ix:
        first = ix.bundle.local_index.ntotal
        assert isinstance(ix.bundle.segments[0].local_index.index, faiss.IndexIVFFlat)
    monkeypatch.setattr(li, "MIN_PQ_TRAIN", first + 1)  # the next slide makes it enough
    staged: list[np.dtype] = []
    stage_rows = SegmentStage.stage_rows

    def spy(self: SegmentStage, name: str, x: np.ndarray, ids: np.ndarray) -> None:
        if name == "locals":
            staged.append(x.dtype)
        stage_rows(self, name, x, ids)

    monkeypatch.setattr(SegmentStage, "stage_rows", spy)
    add_slides(root, [second_slide])
    # the new slide's rows wait as codes of the stored index (not float32 rows), and are
    # decoded for the retraining along with the merged segment's
    assert staged and set(staged) == {np.dtype(np.uint8)}
    with open_slide(second_slide) as slide:
        crop = slide.read_region(448, 448, 448, 448, 20.0)
    with cbir.open_index(root, device="cpu") as ix:
        indexes = [s.local_index for s in ix.bundle.segments]  # the old one merged, the new
        assert len(indexes) == 2 and all(isinstance(i.index, faiss.IndexIVFPQ) for i in indexes)
        assert ix.bundle.local_index.ntotal == ix.bundle.meta.local_feature_count() > first
        top = ix.search(crop, k=1).hits[0]
    assert top.slide == "second.tif" and abs(top.x - 448) < 40 and abs(top.y - 448) < 40


def test_replacing_a_slide_does_not_count_its_old_features(
    tmp_path: Path,
    generated_slide: Path,
    second_slide: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`add --replace` tombstones the old copy in the same transaction: a collection
    whose live features stay below the PQ threshold is not retrained (nor merged)."""
    from test_delf import delf_recipe

    import cbir.index.local as li
    import cbir.storage.compact as compact
    from cbir.indexer import add_slides, build_index

    root = tmp_path / "idx"
    build_index(
        [generated_slide], root, delf_recipe(tmp_path, "[20]", 100), device="cpu", untrained=True
    )
    add_slides(root, [second_slide])
    with cbir.open_index(root, device="cpu") as ix:
        live = ix.bundle.local_index.ntotal
    monkeypatch.setattr(li, "MIN_PQ_TRAIN", live + 1)  # old + new copy would pass it
    calls: list[object] = []
    monkeypatch.setattr(compact, "retrain_index", lambda *a, **k: calls.append(a))
    add_slides(root, [generated_slide], replace=True)
    assert not calls
    with cbir.open_index(root, device="cpu") as ix:
        assert ix.bundle.local_index.ntotal == live
        assert all(isinstance(s.local_index.index, faiss.IndexIVFFlat) for s in ix.bundle.segments)


def test_row_map_decodes_any_ids_like_faiss_direct_map() -> None:
    """reconstruct by id through the compact row map (16 B a row) equals Faiss's own
    hash-table direct map, with two-byte list numbers (512 lists), ids in any order;
    ids not stored are a KeyError."""
    x = unit_rows(20_000, seed=3)
    ids = np.random.default_rng(3).choice(1 << 40, len(x), replace=False).astype(np.int64)
    index = local_index_template(LocalConfig(float_factory="IVF512,Flat"), x).emptied()
    assert isinstance(index, LocalCodeIndex) and index.code_size == 2 + 160
    index.add(x, ids)
    ask = ids[np.random.default_rng(4).permutation(len(ids))[:3000]]
    reference = faiss.clone_index(index.index)
    reference.set_direct_map_type(faiss.DirectMap.Hashtable)
    np.testing.assert_array_equal(index.reconstruct(ask), reference.reconstruct_batch(ask))
    exact = {int(i): row for i, row in zip(ids.tolist(), x, strict=True)}  # Flat codes
    np.testing.assert_array_equal(
        index.reconstruct(ask[:5]), np.stack([exact[int(i)] for i in ask[:5]])
    )
    with pytest.raises(KeyError, match="not in the index"):
        index.reconstruct(np.array([ids.max() + 1]))
