"""A single-level slide held in memory: queries, plain images, tests."""

from __future__ import annotations

import numpy as np

from cbir.slides.base import Slide, SlideInfo


class ArraySlide(Slide):
    """Wraps an (h, w, 3) uint8 RGB array as a one-level slide."""

    def __init__(self, image: np.ndarray, info: SlideInfo) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
        self.image = image
        self.info = info
        self.level_dimensions = ((image.shape[1], image.shape[0]),)
        self.level_downsamples = (1.0,)

    @classmethod
    def from_array(
        cls, image: np.ndarray, magnification: float = 20.0, name: str = "<array>"
    ) -> ArraySlide:
        h, w = image.shape[:2]
        info = SlideInfo(
            path=name,
            name=name,
            backend="array",
            width=w,
            height=h,
            level_count=1,
            base_magnification=magnification,
            magnification_source="given",
            mpp=None,
        )
        return cls(image, info)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, dtype=np.uint8)  # outside the image reads as white
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.image.shape[1]), min(y + h, self.image.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.image[y0:y1, x0:x1]
        return out
