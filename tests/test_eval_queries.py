"""tools/eval_queries.py: its transforms and its found-at-place test, on the generated
slide (the evaluation itself runs on the shared slides)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import eval_queries as eq  # noqa: E402

from cbir.search.hits import Hit  # noqa: E402
from cbir.search.query import Region, read_region_image  # noqa: E402
from cbir.slides import open_slide  # noqa: E402
from cbir.storage.metadata import SlideRecord  # noqa: E402


@pytest.fixture()
def rect(generated_slide: Path) -> eq.Rect:
    with open_slide(generated_slide) as slide:
        info = slide.info
    record = SlideRecord(
        slide_id=3, info=info, checksum="-", added="-", min_tissue_fraction=0.5,
        magnifications=[10.0, 20.0], tiles=1,
    )  # fmt: skip
    region = Region(slide=str(generated_slide), x=100, y=60, w=600, h=400, magnification=10.0)
    return eq.Rect(region, record, 20.0)


def test_transforms_keep_the_rectangle_and_change_the_pixels(rect: eq.Rect) -> None:
    base = eq.query(rect, "none")
    assert base is not None and base.dtype == np.uint8
    assert np.array_equal(eq.query(rect, "fliplr"), base[:, ::-1])
    assert eq.query(rect, "rot90").shape == (base.shape[1], base.shape[0], 3)
    assert np.array_equal(eq.query(rect, "rot180"), base[::-1, ::-1])
    jpeg = eq.query(rect, "jpeg50")
    assert jpeg.shape == base.shape and not np.array_equal(jpeg, base)
    bigger = eq.query(rect, "unindexed-mag")  # read at 15x: 1.5 x the pixels
    assert bigger.shape[0] == pytest.approx(base.shape[0] * 1.5, abs=2)
    info = rect.record.info
    assert np.array_equal(base, read_region_image(rect.region, info.base_magnification))


def test_found_at_place_is_iou_on_the_right_slide(rect: eq.Rect) -> None:
    def hit(slide_id: int, x: int, y: int, w: int, h: int) -> Hit:
        return Hit(
            rank=1, slide=info.name, slide_path=info.path, slide_id=slide_id,
            magnification=10.0, x=x, y=y, w=w,
            h=h, row=0, col=0, rows=1, cols=1, distance=0.0, similarity=1.0,
        )  # fmt: skip

    info = rect.record.info
    r = rect.region
    assert eq.iou(hit(3, r.x, r.y, r.w, r.h), r) == 1.0
    assert eq.at_place(hit(3, r.x + 100, r.y, r.w, r.h), rect)  # IoU 500*400/(2*240k-200k)
    assert not eq.at_place(hit(3, r.x + 300, r.y, r.w, r.h), rect)
    assert not eq.at_place(hit(4, r.x, r.y, r.w, r.h), rect)  # another slide
