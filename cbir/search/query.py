"""Queries: an image array, an image file, or a region of a slide -> a grid of tiles."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from cbir.errors import QueryError
from cbir.slides import open_slide
from cbir.slides.tiling import split_tiles
from cbir.slides.tissue import tissue_mask

#: Largest region query, in tiles (20 x 20): its cost grows with the square of this.
MAX_QUERY_TILES = 400

#: Largest query image or region, in pixels at the query's magnification: checked from
#: an image file's header (or a region's size) before anything is decoded. 40 MP holds
#: any shape of at most MAX_QUERY_TILES whole tiles (2 x 401 tiles of 224 px); a query
#: this size peaks below 1 GB (tools/bench_query_memory.py).
MAX_QUERY_PIXELS = 40_000_000

#: A region's magnification is at least this (a 1 px query at @0.0001x helps nobody).
MIN_REGION_MAGNIFICATION = 0.1

_REGION = re.compile(
    r"^(?P<slide>.+):(?P<x>-?\d+),(?P<y>-?\d+),(?P<w>-?\d+),(?P<h>-?\d+)"
    r"(?:@(?P<mag>[-+]?[0-9.]+(?:e[-+]?\d+)?)x?)?$",
    re.IGNORECASE,
)


class Region(BaseModel):
    """A rectangle of a slide: x, y, w, h in level-0 pixels, read at `magnification`.
    `slide`: a path, or the file name of an indexed slide; `magnification` None: the
    highest indexed one of that slide at which the region covers a tile
    (`Index.resolve_region`)."""

    model_config = ConfigDict(frozen=True)

    slide: str
    x: int
    y: int
    w: int
    h: int
    magnification: float | None = None

    @staticmethod
    def matches(text: str) -> bool:
        """Whether `text` has the form SLIDE:x,y,w,h[@MAGx]."""
        return _REGION.match(text.strip()) is not None

    @classmethod
    def parse(cls, text: str) -> Region:
        """`slide.svs:x,y,w,h@20x` (or without `@20x`) -> Region."""
        match = _REGION.match(text.strip())
        if not match:
            raise QueryError(f"{text}: not a region; expected SLIDE:x,y,w,h[@MAGx] (level-0 px)")
        g = match.groupdict()
        try:
            x, y, w, h = (int(g[k]) for k in "xywh")
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise QueryError(f"{text[:200]}: a coordinate has too many digits") from None
        mag = None
        if g["mag"] is not None:
            try:
                mag = float(g["mag"])
            except ValueError:
                raise QueryError(f"{text}: {g['mag']!r} is not a magnification") from None
            if not (math.isfinite(mag) and mag >= MIN_REGION_MAGNIFICATION):
                raise QueryError(
                    f"{text}: magnification {g['mag']}x; give one of at least "
                    f"{MIN_REGION_MAGNIFICATION:g}x (e.g. @20x), or none for the highest "
                    "indexed one"
                )
        return cls(slide=g["slide"], x=x, y=y, w=w, h=h, magnification=mag)

    def __str__(self) -> str:
        at = "" if self.magnification is None else f"@{self.magnification:g}x"
        return f"{self.slide}:{self.x},{self.y},{self.w},{self.h}{at}"


def read_region_image(region: Region, base_magnification: float | None) -> np.ndarray:
    """Pixels of a region at its magnification -> (h', w', 3) uint8."""
    return read_region_at(region, base_magnification)[0]


def read_region_at(
    region: Region,
    base_magnification: float | None,
    read_at: Callable[[float, float], float] | None = None,
) -> tuple[np.ndarray, float]:
    """A region checked at its own magnification and read at `read_at(magnification,
    slide base)` (None: its own; e.g. the nearest indexed one) -> ((h', w', 3) uint8
    pixels, the magnification read)."""
    with open_slide(region.slide, base_magnification) as slide:
        width, height = slide.dimensions
        if region.w <= 0 or region.h <= 0:
            raise QueryError(f"{region}: width and height must be > 0 (an empty region)")
        if region.x < 0 or region.y < 0:
            raise QueryError(
                f"{region}: negative coordinates; x and y are level-0 px from the slide's "
                f"top-left corner (0..{width - 1}, 0..{height - 1})"
            )
        if region.x >= width or region.y >= height:
            raise QueryError(f"{region}: region lies outside the slide ({width} x {height} px)")
        if region.x + region.w > width or region.y + region.h > height:
            raise QueryError(
                f"{region}: region runs past the slide's edge (the slide is {width} x "
                f"{height} px: x + w <= {width}, y + h <= {height})"
            )
        base = slide.info.base_magnification
        if region.magnification > base * (1 + 1e-6):
            raise QueryError(
                f"{region}: {region.magnification:g}x is above the slide's base {base:g}x"
            )
        mag = region.magnification if read_at is None else read_at(region.magnification, base)
        scale = mag / base
        pixels = region.w * scale * region.h * scale
        if pixels > MAX_QUERY_PIXELS:
            raise QueryError(
                f"{region}: {pixels / 1e6:.0f} megapixels at {mag:g}x is "
                f"larger than a query may be ({MAX_QUERY_PIXELS / 1e6:.0f}; query a smaller "
                "region or a lower magnification)"
            )
        return slide.read_region(region.x, region.y, region.w, region.h, mag), mag


def as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Accept (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA uint8 or uint16 -> (h, w, 3)
    uint8, as an image file of those pixels is read (cbir.slides.open.to_rgb8): 16 bits
    scaled by 65535, transparency composited onto white."""
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if image.dtype != np.uint8:
        raise QueryError(f"{name}: image dtype {image.dtype}, expected uint8 (or uint16)")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise QueryError(f"{name}: image shape {image.shape}, expected (h, w, 3)")


#: The shortest query side searched, as a fraction of the tile: a query whose short side
#: lies between this and one tile is resized up to one tile on that side.
MIN_QUERY_SIDE = 0.5


def fit_to_tile(image: np.ndarray, tile_size: int, name: str) -> tuple[np.ndarray, float]:
    """(h, w, 3) uint8 -> the image resized up (cubic) so its short side is one tile when
    it is shorter, and the factor (1.0: as given); QueryError below MIN_QUERY_SIDE."""
    h, w = image.shape[:2]
    short = min(h, w)
    if short >= tile_size:
        return image, 1.0
    import cv2

    least = int(np.ceil(MIN_QUERY_SIDE * tile_size))
    if short < least:
        raise QueryError(
            f"{name}: query is {w} x {h} px, smaller than the {least} px a side that is "
            f"searched (half a {tile_size} px tile; a shorter side is resized up to a tile)"
        )
    factor = tile_size / short
    size = (max(tile_size, round(w * factor)), max(tile_size, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), round(factor, 4)


def centred_box(h: int, w: int, tile_size: int) -> tuple[int, int, int, int]:
    """(x, y, w', h') of the whole tiles centred in an h x w image (px): w' = t * (w // t),
    the rest of each side split evenly between its two edges; a side shorter than a tile
    is kept whole."""
    hh, ww = (s - s % tile_size if s >= tile_size else s for s in (h, w))
    return (w - ww) // 2, (h - hh) // 2, ww, hh


def centred(image: np.ndarray, tile_size: int) -> np.ndarray:
    """(h, w, ...) -> its `centred_box` (cbir.search.placement.QueryFrame says where)."""
    x, y, ww, hh = centred_box(*image.shape[:2], tile_size)
    return image[y : y + hh, x : x + ww]


def query_tiles(image: np.ndarray, tile_size: int, name: str) -> np.ndarray:
    """(h, w, 3) uint8 -> (m, n, t, t, 3) whole tiles centred in it; m, n >= 1."""
    h, w = image.shape[:2]
    if h < tile_size or w < tile_size:
        raise QueryError(
            f"{name}: query is {w} x {h} px, smaller than one {tile_size} x {tile_size} tile"
        )
    rows, cols = h // tile_size, w // tile_size
    if rows * cols > MAX_QUERY_TILES:
        raise QueryError(
            f"{name}: query is {rows} x {cols} tiles; a region query takes at most "
            f"{MAX_QUERY_TILES} tiles (crop it, or query at a lower magnification)"
        )
    return split_tiles(centred(image, tile_size), tile_size)


def tissue_fractions(
    image: np.ndarray, tile_size: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """(h, w, 3) uint8 -> (m, n) tissue fraction of each query tile (query_tiles; the
    tissue mask of indexing, computed on the whole query unless given as (h, w) bool)."""
    mask = (tissue_mask(image) if mask is None else mask).astype(np.float32)
    rows, cols = max(1, image.shape[0] // tile_size), max(1, image.shape[1] // tile_size)
    cropped = centred(mask, tile_size)
    return cropped.reshape(rows, cropped.shape[0] // rows, cols, -1).mean(axis=(1, 3))


#: A query's most tissued tile needs this much tissue (or the bundle's indexing
#: threshold, when lower): a crop across a tissue border still searches; glass, a blank
#: or an all-white image does not.
QUERY_MIN_TISSUE = 0.25


def check_tissue(
    image: np.ndarray,
    tile_size: int,
    min_fraction: float,
    name: str,
    mask: np.ndarray | None = None,
) -> float:
    """Refuse a query without tissue: the most tissue in one of its tiles (the mask that
    indexing uses; `mask` when the caller made it) must reach min(min_fraction,
    QUERY_MIN_TISSUE), min_fraction being the bundle's indexing threshold. Returns that
    largest fraction."""
    best = float(tissue_fractions(image, tile_size, mask).max())
    need = min(min_fraction, QUERY_MIN_TISSUE)
    if best < need:
        grey = image.ndim == 3 and np.ptp(image.astype(np.int16), axis=2).max() <= 8
        why = "; a greyscale image: tissue is told by its stain's colour" if grey else ""
        raise QueryError(
            f"{name}: no tissue in the query (best tile {best:.0%} tissue, {need:.0%} needed"
            f"{why}); --allow-background searches it anyway"
        )
    return best
