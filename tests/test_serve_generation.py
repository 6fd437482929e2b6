"""The server's generations and caches without HTTP: leases keep an old generation and an
evicted slide open until their last user ends; caches stay within their byte bounds;
Deep Zoom over a plain image reads its pixels in place, equal to OpenSlide's ImageSlide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cbir
from cbir.slides.sample import sample_image

pytest.importorskip("fastapi", reason="cbir[serve] is not installed")
from openslide import ImageSlide  # noqa: E402
from openslide.deepzoom import DeepZoomGenerator  # noqa: E402

import cbir.serve.generation as generation  # noqa: E402
from cbir.serve.holder import BundleHolder  # noqa: E402
from cbir.serve.imagery import DZ_OVERLAP, DZ_TILE, SlideView, TileCache  # noqa: E402
from cbir.slides.open import open_slide  # noqa: E402


@pytest.fixture()
def bundle(tmp_path: Path, generated_slide: Path, second_slide: Path) -> Path:
    root = tmp_path / "idx"
    cbir.build_index([generated_slide, second_slide], root, "stats-lsh32")
    return root


def test_old_generation_stays_open_while_leased(bundle: Path) -> None:
    holder = BundleHolder(bundle, device="cpu")
    try:
        with holder.lease() as old, old.slide(1) as entry:
            before = entry.deep_zoom().get_tile(8, (0, 0))
            cbir.label_slide(bundle, "generated.tif", {"a": "1"})  # publishes
            with holder.lease() as new:
                assert new.number == old.number + 1 and new is not old
            # the retired generation and its slide still read
            assert not old.closed and not entry.closed
            assert np.array_equal(np.asarray(entry.deep_zoom().get_tile(8, (0, 0))),
                                  np.asarray(before))  # fmt: skip
        assert old.closed and entry.closed
    finally:
        holder.close()


def test_evicted_slide_closes_after_its_last_lease(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "MAX_OPEN_SLIDES", 1)
    holder = BundleHolder(bundle, device="cpu")
    try:
        with holder.lease() as gen:
            with gen.slide(1) as first:
                with gen.slide(2) as second:  # evicts slide 1 from the LRU
                    assert gen.open_slides == 1 and not first.closed
                    first.deep_zoom().get_tile(8, (0, 0))
                assert not second.closed
            assert first.closed
            with pytest.raises(generation.SlideNotFound, match="no slide 7"):
                with gen.slide(7):
                    pass
    finally:
        holder.close()


def test_tile_cache_stays_within_its_bytes() -> None:
    cache = TileCache(capacity=1000)
    for i in range(50):
        cache.put(("c", 0, i, 0), bytes(100))
    assert cache.nbytes <= 1000 and cache.get(("c", 0, 49, 0)) is not None
    assert cache.get(("c", 0, 0, 0)) is None
    cache.put(("c", 0, 99, 0), bytes(5000))  # larger than the cache: not kept
    assert cache.get(("c", 0, 99, 0)) is None and cache.nbytes <= 1000


def test_plain_image_deep_zoom_equals_image_slide(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.fromarray(sample_image()[:700, :900]).save(path)
    with open_slide(path) as slide:
        ours = DeepZoomGenerator(SlideView(slide), DZ_TILE, DZ_OVERLAP, limit_bounds=False)
        ref = DeepZoomGenerator(ImageSlide(Image.open(path)), DZ_TILE, DZ_OVERLAP,
                                limit_bounds=False)  # fmt: skip
        assert ours.level_tiles == ref.level_tiles
        for level in (ref.level_count - 1, ref.level_count - 2, 3):
            cols, rows = ref.level_tiles[level]
            for address in [(0, 0), (cols - 1, rows - 1)]:
                a = np.asarray(ours.get_tile(level, address))
                b = np.asarray(ref.get_tile(level, address))
                assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1
