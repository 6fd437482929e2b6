"""Bundle format 3: segments and tombstones searched as one index (equal to a single
segment and to brute force, ties included), adds that write only new data, compaction
(by hand, automatic, flat -> IVF), labels in the manifest, footprint, and format-2
bundles (read-only, `cbir upgrade`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.describe import DescribedSlide
from cbir.errors import BundleError
from cbir.eval.synthetic import synthetic_slide
from cbir.indexer import add_described, remove_slides
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe, load_recipe
from cbir.slides.sample import sample_image
from cbir.storage.compact import compact
from cbir.storage.manifest import read_manifest
from cbir.storage.store import write_new_bundle
from cbir.storage.writer import transaction
from cbir.timing import StageTimer
from conftest import tree_digest

FORMAT2 = Path(__file__).parent / "data" / "bundle-format2"


def recipe_with(bits: int = 32, **index: object) -> Recipe:
    """stats-lsh32 with `bits` LSH bits (few bits: many ties) and index settings."""
    base = load_recipe("stats-lsh32")
    enc = base.encoder.model_copy(update={"params": {**base.encoder.params, "bits": bits}})
    return base.model_copy(
        update={
            "name": f"stats-lsh{bits}",
            "encoder": enc,
            "index": base.index.model_copy(update=index),
        }
    )


def synthetic(n_slides: int, seed: int, tiles: int = 300, first: int = 0) -> list[DescribedSlide]:
    """Slides of `tiles` random 12-d stats descriptors on one 20x grid each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(first, first + n_slides):
        cols = 20
        rows = -(-tiles // cols)
        keep = np.zeros((rows, cols), bool)
        keep.ravel()[rng.permutation(rows * cols)[:tiles]] = True
        x = rng.standard_normal((tiles, 12)).astype(np.float32)
        out.append(synthetic_slide(f"s{i:03d}.svs", keep, x))
    return out


def build(root: Path, recipe: Recipe, slides: list[DescribedSlide], segments: int = 1) -> None:
    with transaction(root, create=True, overwrite=True) as writer:
        write_new_bundle(
            writer, recipe, TilePipeline(recipe), slides, StageTimer(), segments=segments
        )


def add(root: Path, slides: list[DescribedSlide], compact_: bool = True) -> None:
    with transaction(root, create=False) as writer:
        add_described(writer, slides, StageTimer(), compact=compact_)
        writer.commit(writer.previous.recipe)  # type: ignore[union-attr]


def live_codes(root: Path) -> tuple[np.ndarray, np.ndarray]:
    with cbir.open_index(root) as ix:
        grids = list(ix.bundle.meta.all_grids())
    return (
        np.concatenate([g.codes[g.valid] for g in grids]),
        np.concatenate([g.ids[g.valid] for g in grids]),
    )


def brute_force(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple:
    """Exact top k by Hamming, ties by id: (D (k,), I (k,))."""
    d = np.unpackbits(codes ^ q, axis=1).sum(axis=1)
    order = np.lexsort((ids, d))[:k]
    return d[order], ids[order]


def results(root: Path, queries: np.ndarray, k: int) -> list[tuple[list, list]]:
    """Tie-ordered top k of each query code, and every tile hit through the API."""
    out = []
    with cbir.open_index(root) as ix:
        for q in queries:
            D, I = ix.bundle.index.search_tie_ordered(q[None], k)
            hits = ix.search_codes(q.reshape(1, 1, -1), k)
            out.append((D.tolist(), I.tolist(), [(h.slide, h.x, h.y, h.distance) for h in hits]))
    return out


@pytest.mark.parametrize("ivf", [False, True])
def test_segments_search_exactly_as_one_index(tmp_path: Path, ivf: bool) -> None:
    """Eight slides in 1 or 4 segments (same fitted state), then tombstones: tie-ordered
    top k equal across layouts and to brute force; with a shared IVF quantizer too."""
    recipe = recipe_with(
        bits=8, **({"ivf_threshold": 1000, "nlist": 16, "nprobe": 16} if ivf else {})
    )
    slides = synthetic(8, seed=1)
    one, four = tmp_path / "one", tmp_path / "four"
    build(one, recipe, slides, segments=1)
    build(four, recipe, slides, segments=4)
    assert len(read_manifest(four).segments) == 4
    assert read_manifest(four).index_kind == ("ivf" if ivf else "flat")
    codes, ids = live_codes(one)
    rng = np.random.default_rng(0)
    queries = codes[rng.choice(len(codes), 25, replace=False)]
    assert results(one, queries, 20) == results(four, queries, 20)
    if ivf:  # probing 4 of 16 lists (approximate): still the same as one segment
        with cbir.open_index(one) as a, cbir.open_index(four) as b:
            a.bundle.index.set_nprobe(4)
            b.bundle.index.set_nprobe(4)
            for q in queries:
                ta, tb = (
                    a.bundle.index.search_tie_ordered(q[None], 20),
                    b.bundle.index.search_tie_ordered(q[None], 20),
                )
                assert [x.tolist() for x in ta] == [x.tolist() for x in tb]
            Da, Ia = a.bundle.index.search(queries, 20)
            Db, Ib = b.bundle.index.search(queries, 20)
            assert np.array_equal(Da, Db)  # batched: ties at the k-th distance in any order
    for q in queries:
        D, I = brute_force(codes, ids, q, 20)
        with cbir.open_index(four) as ix:
            got_D, got_I = ix.bundle.index.search_tie_ordered(q[None], 20)
        assert got_D.tolist() == D.tolist() and got_I.tolist() == I.tolist()
    # tombstones: remove slides 2 and 5 from both; results stay equal and exact
    for root in (one, four):
        remove_slides(root, ["s002.svs", "s005.svs"])
    assert sum(len(s.dead_slides) for s in read_manifest(four).segments) in (0, 2)
    assert results(one, queries, 20) == results(four, queries, 20)
    codes, ids = live_codes(four)
    assert not np.isin(ids >> 32, [3, 6]).any()  # slide ids of s002, s005
    for q in queries:
        D, I = brute_force(codes, ids, q, 20)
        with cbir.open_index(four) as ix:
            got_D, got_I = ix.bundle.index.search_tie_ordered(q[None], 20)
            assert len(ix.search_codes(q.reshape(1, 1, -1), 20)) == 20  # k hits come back
        assert got_D.tolist() == D.tolist() and got_I.tolist() == I.tolist()


def test_add_writes_only_a_new_segment_and_remove_only_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build(root, recipe_with(), synthetic(4, seed=2))
    first = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    add(root, synthetic(1, seed=3, first=4))
    man = read_manifest(root)
    assert [s.name for s in man.segments] == ["seg-000001", "seg-000002"]
    for p, data in first.items():
        if p.name != "manifest.json":
            assert p.read_bytes() == data, p  # the live segment and state are untouched
    segs = tree_digest(root / "seg-000001"), tree_digest(root / "seg-000002")
    remove_slides(root, ["s001.svs"])
    man = read_manifest(root)
    assert man.segments[0].dead_slides == [2] and man.segments[0].dead_tiles == 300
    assert (tree_digest(root / "seg-000001"), tree_digest(root / "seg-000002")) == segs
    assert man.counts.tiles == 4 * 300 and man.counts.slides == 4
    cbir.label_slide(root, "s000.svs", {"diagnosis": "A"})
    assert (tree_digest(root / "seg-000001"), tree_digest(root / "seg-000002")) == segs
    assert read_manifest(root).labels == {1: {"diagnosis": "A"}}
    # removing the only slide of a segment drops the segment
    remove_slides(root, ["s004.svs"])
    assert [s.name for s in read_manifest(root).segments] == ["seg-000001"]


def test_compact_merges_and_keeps_results(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build(root, recipe_with(bits=8), synthetic(3, seed=4))
    for i in range(3):
        add(root, synthetic(1, seed=10 + i, first=3 + i))
    remove_slides(root, ["s001.svs"])
    cbir.label_slide(root, "s004.svs", {"k": "v"})
    codes, _ = live_codes(root)
    queries = codes[:15]
    before = results(root, queries, 10)
    with cbir.open_index(root) as ix:
        info = ix.info()
    assert (info.segments, info.removed_tiles) == (4, 300)
    report = compact(root)
    assert (report.segments_before, report.segments_after) == (4, 1)
    assert report.tombstoned_tiles_dropped == 300 and report.tiles == 5 * 300
    man = read_manifest(root)
    assert len(man.segments) == 1 and man.segments[0].dead_slides == []
    assert results(root, queries, 10) == before
    with cbir.open_index(root) as ix:
        assert ix.slides[5].labels == {"k": "v"}
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        man.segments[0].name,
        man.state,
    ]


def test_add_merges_segments_past_the_recipe_limit(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build(root, recipe_with(bits=8, max_segments=3), synthetic(4, seed=5, tiles=400))
    codes = []
    for i in range(5):
        add(root, synthetic(1, seed=20 + i, tiles=100, first=4 + i))
        assert len(read_manifest(root).segments) <= 3
    man = read_manifest(root)
    assert man.counts.tiles == 4 * 400 + 5 * 100
    assert man.segments[0].tiles == 4 * 400  # the big segment was never rewritten
    codes, ids = live_codes(root)
    with cbir.open_index(root) as ix:
        for q in codes[::97]:
            D, I = brute_force(codes, ids, q, 10)
            got_D, got_I = ix.bundle.index.search_tie_ordered(q[None], 10)
            assert got_D.tolist() == D.tolist() and got_I.tolist() == I.tolist()


def test_growing_past_the_ivf_threshold_trains_a_quantizer(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    recipe = recipe_with(ivf_threshold=1000, nlist=8, nprobe=8)
    build(root, recipe, synthetic(2, seed=6))
    assert read_manifest(root).index_kind == "flat"
    add(root, synthetic(2, seed=7, first=2))
    man = read_manifest(root)
    # the old segment merged into one on the new quantizer, the new one beside it
    assert man.index_kind == "ivf" and man.nlist == 8 and len(man.segments) == 2
    state = man.state
    add(root, synthetic(1, seed=8, first=4))  # a later segment reuses the quantizer
    man = read_manifest(root)
    assert man.index_kind == "ivf" and len(man.segments) == 3 and man.state == state
    codes, ids = live_codes(root)
    with cbir.open_index(root) as ix:  # nprobe = nlist: exact
        for q in codes[::151]:
            D, _ = brute_force(codes, ids, q, 10)
            assert ix.bundle.index.search_tie_ordered(q[None], 10)[0].tolist() == D.tolist()


def test_bytes_per_tile(tmp_path: Path) -> None:
    """Format 3 stores no per-tile record: a stats-lsh32 segment costs its codes (4 B in
    the grid, 4 B + 8 B id in Faiss) plus a bit of mask per cell."""
    root = tmp_path / "idx"
    build(root, recipe_with(), synthetic(20, seed=9, tiles=2000))
    seg = read_manifest(root).segments[0]
    assert seg.bytes / seg.tiles < 24, seg.bytes / seg.tiles


def test_format2_is_read_only_and_upgrade_converts_it(tmp_path: Path) -> None:
    root = tmp_path / "old"
    shutil.copytree(FORMAT2, root)
    expected = json.loads((FORMAT2.parent / "bundle-format2-expected.json").read_text())
    image = sample_image()

    def hits(name: str) -> list:
        e = expected[name]
        q = np.ascontiguousarray(image[e["y"] : e["y"] + e["size"], e["x"] : e["x"] + e["size"]])
        with cbir.open_index(root) as ix:
            r = ix.search(q, k=5)
            labels = ix.slides[1].labels
        got = [[h.slide, h.magnification, h.x, h.y, h.w, h.h, h.distance] for h in r.hits]
        return got, labels

    for name in ("tile", "region"):  # as the cbir that wrote it found them
        assert hits(name) == (expected[name]["hits"], {"diagnosis": "COAD"})
    before = tree_digest(root)
    with pytest.raises(BundleError, match=r"format 2 is read-only.*cbir upgrade"):
        remove_slides(root, ["second.tif"])
    assert tree_digest(root) == before
    cli = "from cbir.cli.main import app; app()"
    proc = subprocess.run(
        [sys.executable, "-c", cli, "upgrade", str(root)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    man = read_manifest(root)
    assert man.format_version == 3 and man.labels == {1: {"diagnosis": "COAD"}}
    assert not list(root.glob("gen-*"))
    for name in ("tile", "region"):
        assert hits(name) == (expected[name]["hits"], {"diagnosis": "COAD"})
    remove_slides(root, ["second.tif"])  # writable now
    assert read_manifest(root).counts.slides == 1


def test_cli_compact_and_rebuild(tmp_path: Path, generated_slide: Path, second_slide: Path) -> None:
    root = tmp_path / "idx"
    cbir.build_index([generated_slide], root)
    cbir.add_slides(root, [second_slide])
    cbir.label_slide(root, "second.tif", {"diagnosis": "B"})
    cli = [sys.executable, "-c", "from cbir.cli.main import app; app()"]
    proc = subprocess.run([*cli, "compact", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0 and "2 segments -> 1" in proc.stdout, proc.stderr
    tiles = read_manifest(root).counts.tiles
    proc = subprocess.run([*cli, "rebuild", str(root), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tiles_total"] == tiles and report["slides_total"] == 2
    man = read_manifest(root)
    assert len(man.segments) == 1 and man.state == f"state-{man.generation:06d}"
    with cbir.open_index(root) as ix:
        assert {r.info.name: r.labels for r in ix.slides.values()} == {
            "generated.tif": {},
            "second.tif": {"diagnosis": "B"},
        }
        hits = ix.search(f"{second_slide}:448,448,448,448@20x", k=1).hits
    assert (hits[0].slide, hits[0].x, hits[0].y) == ("second.tif", 448, 448)


def test_many_tombstones_widen_the_search_exactly(tmp_path: Path) -> None:
    """Half a segment removed (not merged at 0.5): each segment is asked for k plus at
    most k extra rows, widened until k live ones are found: still exact."""
    root = tmp_path / "idx"
    build(root, recipe_with(bits=8), synthetic(10, seed=12, tiles=200))
    remove_slides(root, [f"s{i:03d}.svs" for i in range(0, 10, 2)])
    man = read_manifest(root)
    assert len(man.segments) == 1 and man.segments[0].dead_tiles == 1000
    codes, ids = live_codes(root)
    with cbir.open_index(root) as ix:
        for k in (1, 10, 150, 1000):
            for q in codes[::173]:
                D, I = brute_force(codes, ids, q, k)
                got_D, got_I = ix.bundle.index.search_tie_ordered(q[None], k)
                assert got_D.tolist() == D.tolist() and got_I.tolist() == I.tolist()
            Db, Ib = ix.bundle.index.search(codes[::97], k)
            assert not np.isin(Ib >> 32, [1, 3, 5, 7, 9]).any()
            assert ((Ib >= 0).sum(axis=1) == min(k, len(ids))).all()
            for row, q in enumerate(codes[::97]):
                assert Db[row][Ib[row] >= 0].tolist() == brute_force(codes, ids, q, k)[0].tolist()


def test_merged_segments_keep_their_place(tmp_path: Path) -> None:
    """A merge made by `add` takes the place of its oldest source: segments stay oldest
    first (scale references are read in that order)."""
    root = tmp_path / "idx"
    build(root, recipe_with(max_segments=2), synthetic(1, seed=13))
    add(root, synthetic(1, seed=14, first=1))
    add(root, synthetic(1, seed=15, first=2))
    man = read_manifest(root)
    assert [s.name for s in man.segments] == ["seg-000003-1", "seg-000003"]
    with cbir.open_index(root) as ix:
        stores = [s.store for s in ix.bundle.segments]
        assert [sorted(r.slide_id for r in st.slide_list()) for st in stores] == [[1, 2], [3]]


def test_overwrite_drops_old_labels_and_names_are_not_reused(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build(root, recipe_with(), synthetic(2, seed=16))
    cbir.label_slide(root, "s000.svs", {"a": "b"})
    (root / "manifest.json").write_text("{ broken")
    build(root, recipe_with(), synthetic(2, seed=17, first=5))
    man = read_manifest(root)
    # the broken manifest is gone with its labels; names go past the directories seen
    assert man.labels == {} and [s.name for s in man.segments] == ["seg-000002"]


def test_a_bundle_written_again_is_not_read_from_the_old_store(tmp_path: Path) -> None:
    """Stores are shared in a process (LMDB opens an environment once), keyed by the data
    file itself: a bundle deleted and built again under its name is read afresh, and
    closing an index twice does not close another's store."""
    root = tmp_path / "idx"
    build(root, recipe_with(), synthetic(2, seed=18))
    kept = cbir.open_index(root)
    other = cbir.open_index(root)
    other.close()
    other.close()
    assert len(kept.bundle.meta.slide_list()) == 2  # still readable
    shutil.rmtree(root)
    build(root, recipe_with(), synthetic(3, seed=19, first=7))
    with cbir.open_index(root) as fresh:
        assert [r.info.name for r in fresh.bundle.meta.slide_list()] == [
            "s007.svs",
            "s008.svs",
            "s009.svs",
        ]
    kept.close()


def test_interrupt_right_after_the_publish_keeps_the_published_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C raised as the manifest replace returns must not remove what it published."""
    import os

    import cbir.storage.state as stage

    root = tmp_path / "idx"
    build(root, recipe_with(), synthetic(1, seed=20))
    real = os.replace

    def replace_then_interrupt(src: object, dst: object) -> None:
        real(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(stage.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        add(root, synthetic(1, seed=21, first=1))
    monkeypatch.setattr(stage.os, "replace", real)
    with cbir.open_index(root) as ix:
        assert len(ix.slides) == 2


def test_rebuild_describes_slides_with_their_settings(tmp_path: Path) -> None:
    """A plain image indexed with a given base magnification and tissue threshold is
    indexed the same way again by `cbir rebuild`."""
    from PIL import Image

    from cbir.upgrade import rebuild

    image = tmp_path / "plain.png"
    Image.fromarray(sample_image()).save(image)
    root = tmp_path / "idx"
    first = cbir.build_index([image], root, base_magnification=40, min_tissue_fraction=0.05)
    report = rebuild(root, device="cpu")
    assert report.tiles_total == first.tiles_total  # type: ignore[attr-defined]
    with cbir.open_index(root) as ix:
        (record,) = ix.slides.values()
    assert record.info.base_magnification == 40 and record.min_tissue_fraction == 0.05


def test_add_replace_keeps_a_slides_settings_unless_given(tmp_path: Path) -> None:
    """`cbir add --replace` re-indexes a slide with the base magnification and tissue
    threshold it was indexed with (it fell back to 20x and the recipe's threshold), and
    with new ones when they are given."""
    from PIL import Image

    image = tmp_path / "plain.png"
    Image.fromarray(sample_image()).save(image)
    root = tmp_path / "idx"
    first = cbir.build_index([image], root, base_magnification=40, min_tissue_fraction=0.05)
    again = cbir.add_slides(root, [image], replace=True)
    assert again.tiles_total == first.tiles_total  # type: ignore[attr-defined]
    with cbir.open_index(root) as ix:
        (record,) = ix.slides.values()
    assert record.info.base_magnification == 40 and record.info.magnification_source == "given"
    assert record.min_tissue_fraction == 0.05
    cbir.add_slides(root, [image], replace=True, base_magnification=20, min_tissue_fraction=0.5)
    with cbir.open_index(root) as ix:
        (record,) = ix.slides.values()
    assert record.info.base_magnification == 20 and record.min_tissue_fraction == 0.5


def mapped_files() -> set[str]:
    """Paths of the files this process has memory-mapped (Linux /proc/self/maps)."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return {parts[5] for line in lines if len(parts := line.split(maxsplit=5)) == 6}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc/self/maps")
def test_segment_indexes_are_memory_mapped_and_outlive_a_compaction(tmp_path: Path) -> None:
    """An opened bundle maps its segments' Faiss files (IVF lists) instead of reading
    them into memory; searches equal the same index read into memory, and go on
    unchanged after a compaction unlinks the mapped files."""
    from cbir.index.binary import BinaryTileIndex
    from cbir.storage.manifest import INDEX_FILE

    recipe = recipe_with(bits=16, ivf_threshold=1000, nlist=16, nprobe=4)
    root = tmp_path / "b"
    build(root, recipe, synthetic(6, seed=2), segments=3)
    codes, _ = live_codes(root)
    queries = codes[:: len(codes) // 20][:20]
    with cbir.open_index(root) as ix:
        files = [s.path / INDEX_FILE for s in ix.bundle.segments]
        assert {str(f.resolve()) for f in files} <= mapped_files()
        before = [ix.bundle.index.search_tie_ordered(q[None], 10) for q in queries]
        copies = [BinaryTileIndex.load(f, nprobe=4) for f in files]  # read, not mapped
        for q, (D, I) in zip(queries, before, strict=True):
            parts = [c.search_tie_ordered(q[None], 10) for c in copies]
            d = np.concatenate([p[0] for p in parts])
            i = np.concatenate([p[1] for p in parts])
            order = np.lexsort((i, d))[:10]
            assert d[order].tolist() == D.tolist() and i[order].tolist() == I.tolist()
        compact(root)  # merges the three segments; their files are unlinked
        assert not any(f.exists() for f in files)
        after = [ix.bundle.index.search_tie_ordered(q[None], 10) for q in queries]
    assert [[x.tolist() for x in r] for r in after] == [[x.tolist() for x in r] for r in before]


def test_add_with_another_recipe_names_what_differs(tmp_path: Path, generated_slide: Path) -> None:
    """`add --recipe` of a recipe whose encoder differs from the bundle's is refused in
    one line naming the parameter, its two values and the way out; nothing changes."""
    from cbir.errors import BundleMismatchError

    root = tmp_path / "b"
    build(root, recipe_with(bits=16), synthetic(2, seed=3))
    before = tree_digest(root)
    with pytest.raises(BundleMismatchError) as err:
        other = recipe_with(bits=32).model_copy(update={"name": "stats-lsh16"})
        cbir.add_slides(root, [generated_slide], recipe=other)
    line = str(err.value)
    assert "\n" not in line
    assert "encoder.params.bits: bundle 16, recipe 32" in line and "without --recipe" in line
    from cbir.indexer import spec_differences

    assert spec_differences({"p": {"q": None}}, {"p": {}}) == ["p.q: bundle None, recipe (not set)"]
    with pytest.raises(BundleMismatchError, match="built with recipe 'stats-lsh16', not"):
        cbir.add_slides(root, [generated_slide], recipe="effnet-flat")
    assert tree_digest(root) == before


def test_info_bit_statistics_read_a_sample_of_whole_slides(tmp_path: Path) -> None:
    """`Index.info()` of a binary bundle computes bit statistics on whole slides spread
    over the bundle, about BIT_STATISTICS_CODES codes (all of a small bundle)."""
    from cbir import info as info_module

    root = tmp_path / "b"
    build(root, recipe_with(bits=16), synthetic(10, seed=4, tiles=300))
    with cbir.open_index(root) as ix:
        assert ix.info().bit_statistics["codes"] == 3000  # all of them
        sample = info_module.sampled_codes(ix.collection, most=900)
        assert len(sample) == 900  # slides 1, 5, 9 of 10: whole slides, evenly spaced
        first = next(ix.bundle.meta.grids_of(min(ix.slides)))
        assert np.array_equal(sample[:300], first.codes[first.valid])


def _racing_first_build(root: Path, monkeypatch: pytest.MonkeyPatch, meanwhile):  # type: ignore[no-untyped-def]
    """A first build B into `root` that saw no directory, held between that check and
    its lock; `meanwhile(release_b)` runs then (release_b lets B go on and waits for
    it). Returns B's error."""
    import threading

    import cbir.storage.writer as writer_mod

    checked, go = threading.Event(), threading.Event()
    original = writer_mod._previous_manifest
    errors: list[BaseException] = []

    def held(*args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread() is b and not checked.is_set():
            checked.set()
            go.wait(60)
        return original(*args, **kwargs)

    def first_build_b() -> None:
        try:
            with transaction(root, create=True):
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    def release_b() -> None:
        go.set()
        b.join(60)

    monkeypatch.setattr(writer_mod, "_previous_manifest", held)
    b = threading.Thread(target=first_build_b)
    b.start()
    assert checked.wait(60) and not root.exists()
    try:
        meanwhile(release_b)
    finally:
        release_b()
    return errors[0] if errors else None


def test_a_refused_first_build_never_removes_anothers(
    tmp_path: Path, generated_slide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two first builds into one new folder: the one refused the lock leaves the other's
    folder alone (it removed it mid-build), and one that gets the lock after the other
    published refuses to replace it without --overwrite (it replaced it)."""
    root = tmp_path / "new"

    def a_is_writing(release_b) -> None:  # type: ignore[no-untyped-def]
        with transaction(root, create=True):
            release_b()  # B is refused the lock while A writes
            assert root.is_dir()  # and A's folder is still there

    error = _racing_first_build(root, monkeypatch, a_is_writing)
    assert error is not None and "another cbir process is writing" in str(error)

    root = tmp_path / "new2"
    error = _racing_first_build(
        root, monkeypatch, lambda _: cbir.build_index([generated_slide], root, "stats-lsh32")
    )
    assert error is not None and "an index bundle exists already (use --overwrite)" in str(error)
    with cbir.open_index(root) as ix:
        assert [r.info.name for r in ix.slides.values()] == ["generated.tif"]
