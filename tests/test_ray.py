"""Describing slides on a real local Ray cluster (`ray.init(num_cpus=2)`): the bundle a
Ray build writes equals a single-process build's (tiles, codes, search results), for
`build-index` and `add`, with --skip-errors too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import cbir
from cbir.errors import CbirError
from conftest import CMU, TCGA, needs_shared_data

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'cbir[ray]')")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real Ray cluster on this machine, for this module's tests."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield "auto"
    finally:
        ray.shutdown()


def contents(root: Path) -> tuple[list[tuple], dict[tuple, bytes]]:
    """Every tile record and every code grid of a bundle, by (slide name, magnification)."""
    with cbir.open_index(root) as index:
        names = {sid: r.info.name for sid, r in index.slides.items()}
        meta = index.bundle.meta
        grids = {
            (names[g.slide_id], g.geometry.magnification): g.codes.tobytes() + g.ids.tobytes()
            for g in meta.all_grids()
        }
        ids = np.concatenate([g.ids[g.valid] for g in meta.all_grids()])
        records = sorted(
            (names[r.slide_id], r.magnification, r.row, r.col, r.x, r.y, r.w, r.h)
            for r in meta.tiles_of(ids)
        )
    return records, grids


def same_search(a: Path, b: Path, query: str) -> None:
    with cbir.open_index(a) as ia, cbir.open_index(b) as ib:
        ha, hb = ia.search(query, k=10).hits, ib.search(query, k=10).hits
    assert [h.model_dump() for h in ha] == [h.model_dump() for h in hb]


def test_ray_build_and_add_equal_one_process(
    cluster: str, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    cbir.build_index([generated_slide], local)
    report = cbir.build_index([generated_slide], on_ray, ray=cluster)
    assert "describe (ray)" in report.stage_seconds
    assert contents(local) == contents(on_ray)
    cbir.add_slides(local, [second_slide])
    cbir.add_slides(on_ray, [second_slide], ray=cluster)
    assert contents(local) == contents(on_ray)
    same_search(local, on_ray, f"{generated_slide}:448,224,448,448@40x")


def test_ray_skips_and_fails_like_one_process(
    cluster: str, tmp_path: Path, generated_slide: Path
) -> None:
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"no slide")
    report = cbir.build_index(
        [garbage, generated_slide], tmp_path / "idx", ray=cluster, skip_errors=True
    )
    assert [Path(s.path).name for s in report.skipped] == ["garbage.svs"]
    assert [a.name for a in report.added] == ["generated.tif"]
    with pytest.raises(CbirError, match="garbage.svs"):
        cbir.build_index([generated_slide, garbage], tmp_path / "idx2", ray=cluster)
    assert not (tmp_path / "idx2").exists()
    # a failed add leaves the bundle as it was, with no worker's segment behind
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())
    with pytest.raises(CbirError, match="garbage.svs"):
        cbir.add_slides(tmp_path / "idx", [garbage], ray=cluster)
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == before


@needs_shared_data
def test_ray_build_of_the_real_slides(cluster: str, tmp_path: Path) -> None:
    """Two workers, each writing its slide as its own segment: the same tiles, codes and
    search results as one process writing one segment."""
    from cbir.storage.manifest import read_manifest

    local, on_ray = tmp_path / "local", tmp_path / "ray"
    cbir.build_index([CMU, TCGA], local)
    cbir.build_index([CMU, TCGA], on_ray, ray=cluster, ray_workers=2)
    assert len(read_manifest(on_ray).segments) == 2 and len(read_manifest(local).segments) == 1
    assert not list(on_ray.glob(".tmp-*"))
    assert contents(local) == contents(on_ray)
    same_search(local, on_ray, f"{CMU}:896,896,672,672@20x")


@pytest.mark.parametrize("ivf", [True, False])
def test_sharded_search_equals_one_process(cluster: str, tmp_path: Path, ivf: bool) -> None:
    """A bundle of 4 segments with tombstones, its indexes on Ray actors: the same
    tie-ordered top k, tile hits and region hits as searched in this process. Binary
    IVF segments are stacked on each actor (one call an actor per query), exact ones not."""
    from test_segments import build, recipe_with, synthetic

    root = tmp_path / "idx"
    ivf_cfg = {"ivf_threshold": 1000, "nlist": 16, "nprobe": 8} if ivf else {}
    recipe = recipe_with(bits=8, **ivf_cfg)
    build(root, recipe, synthetic(8, seed=11), segments=4)
    cbir.remove_slides(root, ["s003.svs"])
    with cbir.open_index(root) as local, cbir.open_index(root, ray=cluster) as sharded:
        assert len(sharded.bundle.shards) == 2
        assert sharded.bundle.index.segments == (2 if ivf else 4)
        grids = list(local.bundle.meta.all_grids())
        codes = np.concatenate([g.codes[g.valid] for g in grids])
        for q in codes[::211]:
            a = local.bundle.index.search_tie_ordered(q[None], 15)
            b = sharded.bundle.index.search_tie_ordered(q[None], 15)
            assert [x.tolist() for x in a] == [x.tolist() for x in b]
            ha = local.search_codes(q.reshape(1, 1, -1), 10)
            hb = sharded.search_codes(q.reshape(1, 1, -1), 10)
            assert [h.model_dump() for h in ha] == [h.model_dump() for h in hb]
        g = grids[0]
        block = g.codes[2:4, 3:6]
        ha, hb = local.search_codes(block, 5), sharded.search_codes(block, 5)
        assert ha and [h.model_dump() for h in ha] == [h.model_dump() for h in hb]
        Da, Ia = local.bundle.index.search(codes[:50], 12)
        Db, Ib = sharded.bundle.index.search(codes[:50], 12)
        assert np.array_equal(Da, Db)  # batched search: ties at the k-th in any order
        for row in range(len(Da)):
            below = Da[row] < Da[row, -1]
            assert set(Ia[row][below]) == set(Ib[row][below])


def test_server_searches_on_ray_shards(
    cluster: str, tmp_path: Path, generated_slide: Path, second_slide: Path
) -> None:
    from fastapi.testclient import TestClient

    from cbir.serve.app import create_app

    root = tmp_path / "idx"
    cbir.build_index([generated_slide], root)
    cbir.add_slides(root, [second_slide])  # two segments
    region = {"slide": 2, "x": 448, "y": 448, "w": 448, "h": 448, "magnification": 20, "k": 5}
    with TestClient(create_app(root, device="cpu")) as c:
        plain = c.post("/search", json=region).json()
    with TestClient(create_app(root, device="cpu", ray=cluster)) as c:
        sharded = c.post("/search", json=region).json()
    assert plain["hits"] and plain["hits"] == sharded["hits"]
    assert (plain["hits"][0]["slide"], plain["hits"][0]["x"]) == ("second.tif", 448)


def test_a_shard_stacks_only_binary_ivf_segments(tmp_path: Path) -> None:
    """A shard given binary IVF segments answers for them as one index; given a segment
    that is not IVF (a Ray worker's, finished on the old exact index) it keeps each."""
    from test_segments import build, recipe_with, synthetic

    from cbir.distributed.search import SegmentShard, stack_name
    from cbir.storage.manifest import INDEX_FILE, read_manifest

    ivf, flat = tmp_path / "ivf", tmp_path / "flat"
    build(ivf, recipe_with(bits=8, ivf_threshold=1000, nlist=16), synthetic(4, 1), segments=2)
    build(flat, recipe_with(bits=8), synthetic(2, 2))
    a, b = (ivf / s.name / INDEX_FILE for s in read_manifest(ivf).segments)
    c = flat / read_manifest(flat).segments[0].name / INDEX_FILE
    cfg = read_manifest(ivf).recipe.index
    both = SegmentShard({"a": str(a), "b": str(b)}, "ivf", cfg, 16)
    assert both.ntotal() == {stack_name(["a", "b"]): 1200}
    mixed = SegmentShard({"a": str(a), "c": str(c)}, "ivf", cfg, 16)
    assert mixed.ntotal() == {"a": 600, "c": 600}
