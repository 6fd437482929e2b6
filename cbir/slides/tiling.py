"""Tile grids: 224 x 224 output tiles at each magnification, mapped to level-0 pixels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cbir.slides.base import Slide
from cbir.slides.tissue import TissueFractions, tissue_mask

#: Longest side of the thumbnail the tissue mask is computed on, pixels.
THUMBNAIL_SIDE = 1024


@dataclass(frozen=True)
class GridGeometry:
    """A grid of square tiles at one magnification, in level-0 pixels.

    Cell (r, c) covers level-0 x in [round(c * step), round(c * step) + size), same for y.
    With a stride below the tile size, tiles overlap: a tile spans `per_tile` cells.
    """

    magnification: float
    rows: int
    cols: int
    step: float  # level-0 pixels between tile origins = stride * base / magnification
    tile_size: int  # output pixels per tile side
    stride: int = 0  # output pixels between tile origins; 0: tile_size (no overlap)

    @property
    def stride_px(self) -> int:
        """Output pixels between tile origins."""
        return self.stride or self.tile_size

    @property
    def per_tile(self) -> int:
        """Cells per tile side: tile_size / stride (1 without overlap)."""
        return self.tile_size // self.stride_px

    @property
    def level0_per_px(self) -> float:
        """Level-0 pixels per output pixel (base / magnification)."""
        return self.step / self.stride_px

    @property
    def size(self) -> int:
        """Tile side in level-0 pixels."""
        return round(self.step * self.per_tile)

    def origin(self, r: np.ndarray | int, c: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 (x, y) of cell (r, c)."""
        return np.round(np.asarray(c) * self.step).astype(np.int64), np.round(
            np.asarray(r) * self.step
        ).astype(np.int64)

    def rect(self, r: int, c: int, nrows: int = 1, ncols: int = 1) -> tuple[int, int, int, int]:
        """Level-0 (x, y, w, h) of the block of nrows x ncols cells starting at (r, c)."""
        x, y = (int(v) for v in self.origin(r, c))
        x1, y1 = (int(v) for v in self.origin(r + nrows - 1, c + ncols - 1))
        return x, y, x1 + self.size - x, y1 + self.size - y

    def tiles_rect(self, r: int, c: int, m: int, n: int) -> tuple[int, int, int, int]:
        """Level-0 (x, y, w, h) of m x n adjacent tiles from cell (r, c) (a region of
        m x n query tiles: its tiles lie `per_tile` cells apart). w, h are the region's
        n x m tiles of output px scaled to level 0 and rounded once, so that reading the
        rectangle at this magnification gives exactly n * tile_size x m * tile_size px
        (the difference of two rounded origins could be 1 px off: 897 px at 15x of 20x
        read back as 673 px, not 672)."""
        x, y = (int(v) for v in self.origin(r, c))
        per_px = self.level0_per_px
        return x, y, round(n * self.tile_size * per_px), round(m * self.tile_size * per_px)


def slide_magnifications(base: float, wanted: Sequence[float]) -> list[float]:
    """The wanted magnifications a slide of base magnification `base` has without upsampling."""
    return sorted(m for m in wanted if m <= base * (1 + 1e-6))


def grid_for(
    slide: Slide, magnification: float, tile_size: int, stride: int | None = None
) -> GridGeometry:
    """The complete-tile grid of `slide` at `magnification` (partial edge tiles are
    dropped); `stride` output px between tiles (None: tile_size, no overlap)."""
    stride = stride or tile_size
    per_px = slide.info.base_magnification / magnification
    width, height = slide.dimensions
    step, size = stride * per_px, tile_size * per_px
    if stride == tile_size:
        rows, cols = int(height // step), int(width // step)
    else:
        rows = int((height - size) // step) + 1 if height >= size else 0
        cols = int((width - size) // step) + 1 if width >= size else 0
    return GridGeometry(
        magnification=magnification,
        rows=rows,
        cols=cols,
        step=step,
        tile_size=tile_size,
        stride=0 if stride == tile_size else stride,
    )


#: A thumbnail must give the smallest tile at least this many pixels a side.
MIN_THUMBNAIL_PX_PER_TILE = 8


def tissue_thumbnail(slide: Slide, smallest_tile: float) -> np.ndarray:
    """(h, w, 3) uint8 overview of `slide` for its tissue mask: the thumbnail stored in
    the file when it resolves a tile of `smallest_tile` level-0 px well enough, else one
    read of the slide."""
    width = slide.dimensions[0]
    thumb = slide.stored_thumbnail()
    if thumb is None or width / thumb.shape[1] > smallest_tile / MIN_THUMBNAIL_PX_PER_TILE:
        thumb, _ = slide.thumbnail(THUMBNAIL_SIDE)
    return thumb


def slide_tissue(slide: Slide, smallest_tile: float) -> TissueFractions:
    """Tissue fractions of `slide`, from its `tissue_thumbnail`."""
    return TissueFractions(tissue_mask(tissue_thumbnail(slide, smallest_tile)), slide.dimensions)


def tissue_cells(grid: GridGeometry, tissue: TissueFractions, min_fraction: float) -> np.ndarray:
    """(rows, cols) bool: cells whose tissue fraction is at least `min_fraction`."""
    rr, cc = np.meshgrid(np.arange(grid.rows), np.arange(grid.cols), indexing="ij")
    x, y = grid.origin(rr, cc)
    frac = tissue.fractions(x, y, grid.size, grid.size)
    return frac >= min_fraction


def split_tiles(image: np.ndarray, tile_size: int) -> np.ndarray:
    """(H, W, 3) image -> (H // t, W // t, t, t, 3) tiles from the top-left corner."""
    rows, cols = image.shape[0] // tile_size, image.shape[1] // tile_size
    cropped = image[: rows * tile_size, : cols * tile_size]
    return cropped.reshape(rows, tile_size, cols, tile_size, 3).swapaxes(1, 2)


@dataclass(frozen=True)
class CellRun:
    """Cells [r0, r0 + nrows) x [c0, c0 + ncols) of grid `scale` (an index into the grids)."""

    scale: int
    r0: int
    c0: int
    nrows: int
    ncols: int


@dataclass(frozen=True)
class SuperBlock:
    """A level-0 rectangle read once, and the cells of every grid whose origin lies in it."""

    x: int
    y: int
    w: int
    h: int
    runs: tuple[CellRun, ...]
    finest: float  # highest magnification among the runs


def superblock_side(grids: Sequence[GridGeometry], target: int = 1800) -> int:
    """Side of super-blocks in level-0 px: a multiple of the coarsest grid step near
    `target`, so grids at multiples of the lowest magnification align on block borders.
    Smaller blocks balance threads better and skip more glass; larger ones re-decode
    fewer compressed tiles on their borders (1800 was best on the real slides here)."""
    coarse = max(g.step for g in grids)
    return max(1, round(coarse * max(1, round(target / coarse))))


def superblocks(
    grids: Sequence[GridGeometry], keeps: Sequence[np.ndarray], side: int
) -> Iterator[SuperBlock]:
    """Super-blocks of `side` level-0 px holding at least one kept cell, in raster order."""
    width = max(g.rect(0, 0, g.rows, g.cols)[2] for g in grids if g.rows and g.cols)
    height = max(g.rect(0, 0, g.rows, g.cols)[3] for g in grids if g.rows and g.cols)
    origins = [
        (g.origin(np.arange(g.rows), 0)[1], g.origin(0, np.arange(g.cols))[0]) for g in grids
    ]
    for y0 in range(0, height, side):
        for x0 in range(0, width, side):
            runs, x1, y1, finest = [], x0, y0, 0.0
            for s, (g, keep, (ys, xs)) in enumerate(zip(grids, keeps, origins, strict=True)):
                r0, r1 = np.searchsorted(ys, [y0, y0 + side])
                c0, c1 = np.searchsorted(xs, [x0, x0 + side])
                if r1 <= r0 or c1 <= c0 or not keep[r0:r1, c0:c1].any():
                    continue
                runs.append(CellRun(s, int(r0), int(c0), int(r1 - r0), int(c1 - c0)))
                rx, ry, rw, rh = g.rect(int(r0), int(c0), int(r1 - r0), int(c1 - c0))
                x1, y1 = max(x1, rx + rw), max(y1, ry + rh)
                finest = max(finest, g.magnification)
            if runs:
                yield SuperBlock(x0, y0, x1 - x0, y1 - y0, tuple(runs), finest)


#: Reduced JPEG decoding (1/2, 1/4, 1/8) for super-blocks between pyramid levels.
REDUCED_SCALES = (8, 4, 2)


def read_superblock(slide: Slide, sb: SuperBlock) -> tuple[np.ndarray, float]:
    """Read a super-block from the coarsest level fine enough for its finest grid, and,
    where that level is 2x or more finer than needed and its JPEG tiles can be decoded at
    reduced size, at 1/2, 1/4 or 1/8 of it (libjpeg's DCT scaling).

    Returns ((h', w', 3) uint8 RGB, its downsample vs level 0).
    """
    wanted = slide.info.base_magnification / sb.finest
    level = slide.best_level(wanted)
    ds = slide.level_downsamples[level]
    for scale in REDUCED_SCALES:
        if wanted / ds >= scale * (1 - 1e-6):
            eff = ds * scale
            bx, by = round(sb.x / eff), round(sb.y / eff)
            bw, bh = max(1, round(sb.w / eff)), max(1, round(sb.h / eff))
            block = slide.read_level_reduced(level, bx, by, bw, bh, scale)
            if block is not None:
                return block, eff
    lx, ly = round(sb.x / ds), round(sb.y / ds)
    lw, lh = max(1, round(sb.w / ds)), max(1, round(sb.h / ds))
    return slide.read_level(level, round(lx * ds), round(ly * ds), lw, lh), ds


def cut_run_tiles(
    block: np.ndarray, ds: float, sb: SuperBlock, grid: GridGeometry, run: CellRun
) -> np.ndarray:
    """Tiles of `run` cut from a super-block image -> (nrows, ncols, t, t, 3) uint8
    (overlapping windows `stride` px apart when the grid has a stride)."""
    t, s = grid.tile_size, grid.stride_px
    x, y, w, h = grid.rect(run.r0, run.c0, run.nrows, run.ncols)
    bx, by = round(sb.x / ds), round(sb.y / ds)
    cx, cy = round(x / ds) - bx, round(y / ds) - by
    cw, ch = max(1, round(w / ds)), max(1, round(h / ds))
    crop = block[cy : cy + ch, cx : cx + cw]
    out_w, out_h = (run.ncols - 1) * s + t, (run.nrows - 1) * s + t
    if crop.shape[:2] != (out_h, out_w):
        crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if s == t:
        return crop.reshape(run.nrows, t, run.ncols, t, 3).swapaxes(1, 2)
    windows = np.lib.stride_tricks.sliding_window_view(crop, (t, t), axis=(0, 1))
    return windows[::s, ::s].transpose(0, 1, 3, 4, 2)
