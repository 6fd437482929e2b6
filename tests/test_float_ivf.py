"""Float recipes at scale: a compressed IVF-PQ index for the pretrained features
(`effnet-ivfpq`), exact below its threshold, candidates reordered by exact L2 on the
vectors the grids keep; segments, growth past the threshold, removal and compaction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.describe import DescribedSlide
from cbir.eval.synthetic import synthetic_slide
from cbir.indexer import add_described
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe, load_recipe
from cbir.storage.compact import compact
from cbir.storage.store import write_new_bundle
from cbir.storage.vector_rows import rows_of
from cbir.storage.writer import transaction
from cbir.timing import StageTimer

DIM, SIDE = 552, 80  # effnet's descriptor; 6,400 tiles a slide
THRESHOLD = 10_000


def recipe(factory: str) -> Recipe:
    r = load_recipe("effnet-ivfpq")
    index = r.index.model_copy(update={"float_factory": factory, "ivf_threshold": THRESHOLD})
    return r.model_copy(update={"index": index})


def slides(first: int, count: int, seed: int = 0) -> list[DescribedSlide]:
    """Slides of SIDE x SIDE tiles with 552-d descriptors of low intrinsic dimension
    (a 16-d latent through a random ReLU layer, plus noise), smooth across each slide."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, DIM)).astype(np.float32)
    out = []
    for i in range(first, first + count):
        r = np.random.default_rng(1000 + i)
        z = r.standard_normal((SIDE * SIDE, 16)).astype(np.float32)
        x = np.maximum(z @ w1, 0) @ w2 + 2.0 * r.standard_normal((SIDE * SIDE, DIM))
        keep = np.ones((SIDE, SIDE), bool)
        out.append(synthetic_slide(f"s{i}.svs", keep, x.astype(np.float32)))
    return out


def build(root: Path, r: Recipe, described: list[DescribedSlide]) -> Path:
    with transaction(root, create=True, overwrite=True) as writer:
        write_new_bundle(writer, r, TilePipeline(r), described, StageTimer())
    return root


def add(root: Path, described: list[DescribedSlide], compact: bool = True) -> None:
    with transaction(root, create=False) as writer:
        add_described(writer, described, StageTimer(), compact=compact)
        writer.commit(writer.previous.recipe)


def queries(ix: cbir.Index, n: int, seed: int = 1) -> np.ndarray:
    """n stored tile vectors (from the grids), slightly moved: (n, 1, 1, DIM)."""
    rng = np.random.default_rng(seed)
    grids = [g for sid in ix.slides for g in ix.bundle.meta.grids_of(sid)]
    out = []
    for _ in range(n):
        g = grids[rng.integers(len(grids))]
        row, col = rng.integers(SIDE, size=2)
        v = ix.bundle.pipeline.codes_from_bytes(g.codes[row, col][None])[0]
        v = v + 0.01 * rng.standard_normal(DIM).astype(np.float32)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)[:, None, None, :].astype(np.float32)


def top(ix: cbir.Index, q: np.ndarray, k: int = 10) -> list[tuple[str, int, int]]:
    return [(h.slide, h.x, h.y) for h in ix.search_codes(q, k)]


#: The IVF-PQ factories tested: effnet-ivfpq's, and one rotated by OPQ first (a Faiss
#: IndexPreTransform inside the id map; training the rotation takes ~100 s here: slow).
FACTORIES = [
    "IVF{nlist},PQ138x4fs",
    pytest.param("OPQ46,IVF{nlist},PQ46x4fs", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 slides (19,200 tiles) in an exact bundle."""
    return build(tmp_path_factory.mktemp("float-flat") / "flat", recipe("Flat"), slides(0, 3))


@pytest.fixture(scope="module", params=FACTORIES)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, flat: Path
) -> tuple[Path, Path]:
    """The same 3 slides in an IVF-PQ bundle of each factory, and the exact one."""
    tmp = tmp_path_factory.mktemp("float-ivf")
    return build(tmp / "ivf", recipe(request.param), slides(0, 3)), flat


def test_the_ivf_index_finds_what_the_exact_one_does(pair: tuple[Path, Path]) -> None:
    ivf, flat = pair
    with cbir.open_index(ivf) as a, cbir.open_index(flat) as b:
        assert a.bundle.index.approximate and a.bundle.manifest.nlist == 128
        assert not b.bundle.index.approximate
        q = queries(b, 40)
        overlap = []
        for i in range(len(q)):
            got, want = top(a, q[i : i + 1]), top(b, q[i : i + 1])
            assert got[0] == want[0]  # the moved tile itself, first
            overlap.append(len(set(got) & set(want)) / 10)
        assert np.mean(overlap) >= 0.9
        # reordered by exact L2: the distances are the exact index's
        ha, hb = a.search_codes(q[:1], 10), b.search_codes(q[:1], 10)
        same = {(h.slide, h.x, h.y): h.distance for h in hb}
        for h in ha:
            if (h.slide, h.x, h.y) in same:
                assert h.distance == pytest.approx(same[(h.slide, h.x, h.y)], abs=1e-4)


def test_small_collections_are_exact_and_grow_into_the_ivf(tmp_path: Path) -> None:
    root = build(tmp_path / "idx", recipe("IVF{nlist},PQ138x4fs"), slides(0, 1))
    with cbir.open_index(root) as ix:
        assert not ix.bundle.index.approximate  # 6,400 tiles < THRESHOLD: Flat
    add(root, slides(1, 1))  # 12,800: past the threshold, retrained into the IVF
    with cbir.open_index(root) as ix:
        assert ix.bundle.index.approximate and ix.bundle.index.ntotal == 2 * SIDE * SIDE
        q = queries(ix, 10)
        assert all(len(top(ix, q[i : i + 1])) == 10 for i in range(len(q)))


def test_segments_removal_and_compaction(pair: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ivf"
    shutil.copytree(pair[0], root)
    add(root, slides(3, 1), compact=False)  # a second segment, sharing the quantizer
    with cbir.open_index(root) as ix:
        index = ix.bundle.index
        assert index.segments == 2 and index.approximate and len(ix.bundle.rows) == 2
        q = queries(ix, 20, seed=3)
        before = [top(ix, q[i : i + 1]) for i in range(len(q))]
        # one quantizer search serves every segment: the same lists as each their own
        xq = q[:, 0, 0, :]
        assert index._assigned(xq) is not None
        shared = index.search(xq, 50)
        index._assigned = lambda xq: None  # type: ignore[method-assign]
        own = index.search(xq, 50)
        assert np.array_equal(shared[1], own[1]) and np.allclose(shared[0], own[0])
    cbir.remove_slides(root, ["s0.svs"])
    with cbir.open_index(root) as ix:
        after = [top(ix, q[i : i + 1]) for i in range(len(q))]
        assert all(s != "s0.svs" for hits in after for s, _, _ in hits)
        assert all(len(hits) == 10 for hits in after)
    compact(root)
    with cbir.open_index(root) as ix:
        assert ix.bundle.index.segments == 1 and ix.bundle.index.approximate
        (rows,) = ix.bundle.rows  # the merge rewrote the live rows into one file
        assert rows.ntotal == ix.bundle.index.ntotal == 3 * SIDE * SIDE
        assert [top(ix, q[i : i + 1]) for i in range(len(q))] == after
    kept = [h for hits in before for h in hits if h[0] != "s0.svs"]
    assert kept  # the other slides' hits were there before too


def test_codes_are_read_without_whole_grids(pair: tuple[Path, Path]) -> None:
    """`codes_of` reads single codes from the LMDB map, equal to the grids' cells; tile
    records keep the grids' layout without their codes."""
    with cbir.open_index(pair[0]) as ix:
        meta = ix.bundle.meta
        rng = np.random.default_rng(5)
        sid = sorted(ix.slides)[1]
        ids = meta.tile_ids_of(sid)[rng.choice(SIDE * SIDE, 50, replace=False)]
        got = meta.codes_of(np.concatenate([ids, [ids[0] + 10**6]]))
        assert got[-1] is None
        grid = meta.grid(sid, 20.0)
        for tid, raw in zip(ids.tolist(), got, strict=False):
            rec = meta.tile(tid)
            assert raw == grid.codes[rec.row, rec.col].tobytes()
        store = meta.store_of(sid)
        assert all(g.codes.shape[-1] == 0 for g in store._tiles(sid).grids)
        # the grids keep float16 vectors (recipe store = "float16"): 2 bytes a dim
        assert all(len(raw) == 2 * DIM for raw in got[:-1])
        assert ix.bundle.pipeline.code_bytes == 2 * DIM
        # the rerank's own copies: float16 rows in the segment's mapped file, equal to
        # the grids' (no LMDB copies any more)
        kept = rows_of(ix.bundle.rows, ids, DIM)
        raw = np.frombuffer(b"".join(got[:-1]), np.uint8).reshape(len(ids), -1)
        assert np.array_equal(kept, ix.bundle.pipeline.codes_from_bytes(raw))
        assert np.isnan(meta.vectors_of(ids[:3], DIM)).all()
        assert np.isnan(rows_of(ix.bundle.rows, ids[:1] + 10**6, DIM)).all()


def test_float16_grids_halve_the_vectors_and_keep_the_hits(tmp_path: Path) -> None:
    """A float recipe with `store = "float16"` keeps its grids' vectors in half the
    bytes; the encoder rounds to float16's values, so a stored tile queried with its own
    vector is at distance 0 and the hits are a float32 build's."""
    described = slides(0, 1)
    r16 = recipe("Flat")
    r32 = r16.model_copy(
        update={
            "encoder": r16.encoder.model_copy(
                update={"params": {**r16.encoder.params, "store": "float32"}}
            )
        }
    )
    half, full = build(tmp_path / "half", r16, described), build(tmp_path / "full", r32, described)

    def lmdb_bytes(root: Path) -> int:
        return sum(f.stat().st_size for f in root.rglob("*.mdb"))

    assert lmdb_bytes(half) < 0.6 * lmdb_bytes(full)  # the grids are most of it
    with cbir.open_index(half) as a, cbir.open_index(full) as b:
        assert a.bundle.pipeline.code_bytes == DIM * 2 and b.bundle.pipeline.code_bytes == DIM * 4
        q = queries(b, 20, seed=7)
        for i in range(len(q)):
            got, want = top(a, q[i : i + 1]), top(b, q[i : i + 1])
            assert got[0] == want[0] and len(set(got) & set(want)) >= 8
        g = next(iter(a.bundle.meta.grids_of(sorted(a.slides)[0])))
        own = a.bundle.pipeline.codes_from_bytes(g.codes[3, 4][None])  # (1, DIM) float32
        hit = a.search_codes(own[:, None, None, :], 1)[0]
        assert (hit.row, hit.col, hit.distance) == (3, 4, 0.0)


def test_bundles_with_lmdb_copies_rerank_the_same(
    pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float bundle written before the row files kept its rerank copies as LMDB values
    (the `vectors` artifact): it is read as before, gives the same hits, and a merge
    rewrites them as rows."""
    from cbir.storage.artifacts import RerankRows, RerankVectors

    def old_store(self: object, seg: object, state: object, rows: object) -> None:
        x = np.asarray(rows.codes, np.float32).astype(np.float16)  # type: ignore[attr-defined]
        seg.meta.put_vectors(rows.txn, rows.ids, x)  # type: ignore[attr-defined]

    with monkeypatch.context() as m:
        m.setattr(RerankRows, "present", lambda self, state: False)
        m.setattr(RerankVectors, "present", lambda self, state: True)
        m.setattr(RerankVectors, "store", old_store)
        old = build(tmp_path / "old", recipe("IVF{nlist},PQ138x4fs"), slides(0, 3))
    with cbir.open_index(old) as a, cbir.open_index(pair[0]) as b:
        assert not a.bundle.rows and "vectors" in a.bundle.segments[0].entry.artifacts
        q = queries(b, 10, seed=11)
        want = [top(b, q[i : i + 1]) for i in range(len(q))]
        assert [top(a, q[i : i + 1]) for i in range(len(q))] == want
    add(old, slides(3, 1), compact=False)  # a new segment with rows beside the old one
    with cbir.open_index(old) as a:
        assert len(a.bundle.rows) == 1 and a.bundle.index.segments == 2
        mixed = [top(a, q[i : i + 1]) for i in range(len(q))]
        assert all(len(hits) == 10 for hits in mixed)
    compact(old)
    with cbir.open_index(old) as a:
        assert len(a.bundle.rows) == 1 and a.bundle.rows[0].ntotal == 4 * SIDE * SIDE
        assert "vectors" not in a.bundle.segments[0].entry.artifacts
        assert [top(a, q[i : i + 1]) for i in range(len(q))] == mixed


def test_tile_records_read_the_layouts_not_the_codes(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A hit's tile record comes from the grid's layout, stored apart from its codes (a
    few hundred bytes, not the slide's megabytes of codes); a store without the layouts
    (segments written before) derives the same records from the grids."""
    import shutil

    import lmdb

    from cbir.slides.grids import GRID_KEY, layout_bytes
    from cbir.storage.manifest import META_DIR
    from cbir.storage.metadata import MetadataStore

    with cbir.open_index(pair[0]) as ix:
        seg = ix.bundle.segments[0]
        sid = sorted(ix.slides)[0]
        ids = seg.store.tile_ids_of(sid)[::97]
        want = seg.store.tiles_of(ids)
        path = seg.path / META_DIR
    key = GRID_KEY.pack(sid, 20.0)
    store = MetadataStore(path, readonly=True)
    with store.env.begin() as txn:
        grid, layout = txn.get(key, db=store.grids), txn.get(key, db=store.layouts)
    store.env.close()
    assert layout == grid[: layout_bytes(grid)] and len(layout) < 1000 < len(grid)
    old = tmp_path / "old.lmdb"
    shutil.copytree(path, old)
    env = lmdb.open(str(old), max_dbs=8, subdir=True)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"layouts", txn=txn), delete=True)
    env.close()
    store = MetadataStore(old, readonly=True)
    assert store.layouts is None and store.tiles_of(ids) == want
    store.env.close()
