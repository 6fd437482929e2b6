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


@needs_shared_data
def test_ray_build_of_the_real_slides(cluster: str, tmp_path: Path) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    cbir.build_index([CMU, TCGA], local)
    cbir.build_index([CMU, TCGA], on_ray, ray=cluster)
    assert contents(local) == contents(on_ray)
    same_search(local, on_ray, f"{CMU}:896,896,672,672@20x")
