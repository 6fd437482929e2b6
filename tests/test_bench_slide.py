"""tools/make_bench_slide.py: a small Aperio-like slide of real tissue, opened and indexed."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import openslide
import pytest

import cbir
from conftest import SHARED_DATA, needs_shared_data

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_bench_slide.py"
needs_crc9 = pytest.mark.skipif(
    not (SHARED_DATA / "tiles-crc9" / "labels.csv").is_file(),
    reason=f"tissue tiles not found in {SHARED_DATA / 'tiles-crc9'} (no ../shared/data)",
)


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_bench_slide", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mbs = _load_tool()
needs_jp2k = pytest.mark.skipif(
    not mbs.jpeg2000_available(),
    reason="this OpenCV build cannot write JPEG 2000 (no OpenJPEG): no JPEG 2000 slide",
)
W, H = 4096, 3072


@needs_shared_data
@needs_crc9
@pytest.mark.parametrize(
    "compression", ["jpeg", pytest.param("jpeg2000", marks=needs_jp2k)], ids=["jpeg", "jp2k"]
)
def test_bench_slide_opens_and_indexes(tmp_path: Path, compression: str) -> None:
    out = tmp_path / f"bench-{compression}.svs"
    path = mbs.make_bench_slide(out, W, H, compression=compression)

    osl = openslide.OpenSlide(str(path))
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    assert osl.level_dimensions == ((W, H), (W // 4, H // 4), (W // 16, H // 16))
    assert "thumbnail" in osl.associated_images
    osl.close()

    slide = cbir.open_slide(path)
    info = slide.info
    assert (info.width, info.height, info.level_count) == (W, H, 3)
    assert info.level_count >= 3
    assert info.base_magnification == 40.0
    assert info.magnification_source == "objective-power"  # Aperio "AppMag = 40"
    assert info.mpp == pytest.approx(0.25)
    # glass at a corner, real H&E (saturated, darker) in the middle of the tissue
    corner = slide.read_level(0, 0, 0, 256, 256).reshape(-1, 3).mean(0)
    assert np.all(np.abs(corner - (241, 239, 236)) < 4)
    slide.close()

    report = cbir.build_index([path], tmp_path / "idx")
    per_mag = report.added[0].tiles_per_magnification
    assert set(per_mag) == {f"{m}x" for m in (5, 10, 15, 20, 25, 30, 35, 40)}
    cells_40x = (H // 224) * (W // 224)
    share = per_mag["40x"] / cells_40x
    assert 0.2 <= share <= 0.8, f"{per_mag['40x']} of {cells_40x} 40x cells are tissue"
    # 5x has only 1 x 2 cells of 1792 level-0 px at this size; from 10x on there is tissue
    assert per_mag["5x"] <= math.floor(H / (224 * 8)) * math.floor(W / (224 * 8))
    assert 0 < per_mag["10x"] < per_mag["20x"] < per_mag["40x"]


@needs_shared_data
@needs_crc9
def test_bench_slide_is_deterministic(tmp_path: Path) -> None:
    a = mbs.make_bench_slide(tmp_path / "a.svs", 1024, 768, seed=3, workers=2)
    b = mbs.make_bench_slide(tmp_path / "b.svs", 1024, 768, seed=3, workers=1)
    c = mbs.make_bench_slide(tmp_path / "c.svs", 1024, 768, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    with openslide.OpenSlide(str(a)) as osl:
        assert osl.level_dimensions == ((1024, 768), (256, 192))


def test_bench_slide_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        mbs.make_bench_slide(tmp_path / "x.svs", 1024, 768, compression="lzw")
    with pytest.raises(ValueError, match="tissue_fraction"):
        mbs.make_bench_slide(tmp_path / "x.svs", 1024, 768, tissue_fraction=1.0)
    assert not (tmp_path / "x.svs").exists()
