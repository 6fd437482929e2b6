"""Pixels the server sends: Deep Zoom pyramids of indexed slides (OpenSlide's
`DeepZoomGenerator`; plain images through a `SlideView` over their own pixels) and hit
rectangles cut at their magnification as PNG."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from cbir.errors import QueryError
from cbir.slides.base import Slide
from cbir.slides.openslide_slide import OpenSlideSlide

#: Deep Zoom tiles: 254 px + 1 px overlap (OpenSlide's deepzoom server defaults).
DZ_TILE, DZ_OVERLAP = 254, 1
DZ_FORMAT, DZ_QUALITY = "jpeg", 80
#: A region PNG's longest side is at most this (larger requests are scaled down).
MAX_REGION_SIDE = 2048


class SlideView:
    """A `Slide` with the part of OpenSlide's interface `DeepZoomGenerator` reads
    (level sizes and downsamples, `read_region` at level-0 coordinates as RGBA). Reads
    go straight to the slide's own pixels: no second copy of a plain image is made."""

    properties: dict[str, str] = {}

    def __init__(self, slide: Slide) -> None:
        self._slide = slide
        self.level_count = len(slide.level_dimensions)
        self.level_dimensions = tuple(slide.level_dimensions)
        self.level_downsamples = tuple(slide.level_downsamples)
        self.dimensions = self.level_dimensions[0]

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self._slide.best_level(downsample)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """(w, h) RGBA pixels of `level` whose top left is `location` (level-0 px, as
        `Slide.read_level` takes it)."""
        rgb = self._slide.read_level(level, location[0], location[1], size[0], size[1])
        return Image.fromarray(np.ascontiguousarray(rgb)).convert("RGBA")


def deep_zoom_view(slide: Slide) -> OpenSlide | SlideView:
    """What Deep Zoom reads: an OpenSlide slide's own handle, or a `SlideView`."""
    if isinstance(slide, OpenSlideSlide):
        return slide.handle
    return SlideView(slide)


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


class TileCache:
    """Encoded Deep Zoom tiles (JPEG bytes), least recently used dropped past `capacity`
    bytes. Keys name the slide file's content (its checksum), so a tile stays valid
    across generations that keep the slide and never outlives a replaced one."""

    def __init__(self, capacity: int = 32 << 20) -> None:
        self.capacity = capacity
        self.nbytes = 0
        self._lock = threading.Lock()
        self._tiles: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()

    def get(self, key: tuple[str, int, int, int]) -> bytes | None:
        with self._lock:
            tile = self._tiles.get(key)
            if tile is not None:
                self._tiles.move_to_end(key)
            return tile

    def put(self, key: tuple[str, int, int, int], tile: bytes) -> None:
        if len(tile) > self.capacity:
            return
        with self._lock:
            old = self._tiles.pop(key, None)
            self.nbytes += len(tile) - (len(old) if old is not None else 0)
            self._tiles[key] = tile
            while self.nbytes > self.capacity:
                _, dropped = self._tiles.popitem(last=False)
                self.nbytes -= len(dropped)
