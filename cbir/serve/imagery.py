"""Pixels the server sends: Deep Zoom pyramids of indexed slides (OpenSlide's
`DeepZoomGenerator`; plain images through `openslide.ImageSlide`) and hit rectangles cut
at their magnification as PNG."""

from __future__ import annotations

import io
import threading

import numpy as np
from openslide import ImageSlide, OpenSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from cbir.errors import QueryError
from cbir.slides.array_slide import ArraySlide
from cbir.slides.base import Slide
from cbir.slides.openslide_slide import OpenSlideSlide

#: Deep Zoom tiles: 254 px + 1 px overlap (OpenSlide's deepzoom server defaults).
DZ_TILE, DZ_OVERLAP = 254, 1
DZ_FORMAT, DZ_QUALITY = "jpeg", 80
#: A region PNG's longest side is at most this (larger requests are scaled down).
MAX_REGION_SIDE = 2048


class DeepZoomCache:
    """One `DeepZoomGenerator` per slide id, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generators: dict[tuple[int, int], DeepZoomGenerator] = {}

    def generator(self, generation: int, slide_id: int, slide: Slide) -> DeepZoomGenerator:
        """The pyramid of `slide` (keyed by bundle generation, so a reopened bundle's
        slides get new ones)."""
        key = (generation, slide_id)
        with self._lock:
            if key not in self._generators:
                self._generators = {k: g for k, g in self._generators.items() if k[0] == generation}
                self._generators[key] = DeepZoomGenerator(
                    _openslide_view(slide), DZ_TILE, DZ_OVERLAP, limit_bounds=False
                )
            return self._generators[key]


def _openslide_view(slide: Slide) -> OpenSlide | ImageSlide:
    """The OpenSlide object Deep Zoom reads: the slide's own handle, or an ImageSlide
    over a plain image's pixels."""
    if isinstance(slide, OpenSlideSlide):
        return slide.handle
    if isinstance(slide, ArraySlide):
        return ImageSlide(Image.fromarray(slide.image))
    width, height = slide.dimensions
    return ImageSlide(Image.fromarray(slide.read_level(0, 0, 0, width, height)))


def dzi_xml(generator: DeepZoomGenerator) -> str:
    """The .dzi descriptor of a pyramid."""
    return generator.get_dzi(DZ_FORMAT)


def dz_tile_jpeg(generator: DeepZoomGenerator, level: int, col: int, row: int) -> bytes:
    """One Deep Zoom tile as JPEG; QueryError for a level or address outside the pyramid."""
    if not 0 <= level < generator.level_count:
        raise QueryError(f"level {level}: the pyramid has levels 0..{generator.level_count - 1}")
    cols, rows = generator.level_tiles[level]
    if not (0 <= col < cols and 0 <= row < rows):
        raise QueryError(f"tile {col}_{row}: level {level} has {cols} x {rows} tiles")
    tile = generator.get_tile(level, (col, row))
    buf = io.BytesIO()
    tile.convert("RGB").save(buf, "JPEG", quality=DZ_QUALITY)
    return buf.getvalue()


def region_png(
    slide: Slide, x: int, y: int, w: int, h: int, magnification: float, max_side: int | None
) -> bytes:
    """The level-0 rectangle (x, y, w, h) read at `magnification`, as PNG; its longest
    side is capped at min(max_side, MAX_REGION_SIDE) pixels."""
    width, height = slide.dimensions
    if w <= 0 or h <= 0:
        raise QueryError(f"region {x},{y},{w},{h}: empty")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise QueryError(f"region {x},{y},{w},{h}: outside the slide ({width} x {height} px)")
    if not 0 < magnification <= slide.info.base_magnification * (1 + 1e-6):
        raise QueryError(
            f"magnification {magnification:g}x: the slide's base is "
            f"{slide.info.base_magnification:g}x"
        )
    scale = magnification / slide.info.base_magnification
    out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    cap = min(max_side or MAX_REGION_SIDE, MAX_REGION_SIDE)
    shrink = min(1.0, cap / max(out_w, out_h))
    out_w, out_h = max(1, round(out_w * shrink)), max(1, round(out_h * shrink))
    pixels: np.ndarray = slide.read_resized(x, y, w, h, out_w, out_h)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return buf.getvalue()
