"""Reduced-size decoding of a tiled JPEG TIFF level (Aperio SVS, generic tiled TIFF):
the level's JPEG tiles are read raw (offsets from tifffile, `os.pread`) and decoded at
1/2, 1/4 or 1/8 of their size by libjpeg's DCT scaling (Pillow's `draft`), which costs a
fraction of a full decode. A magnification between two pyramid levels then pays for the
pixels it needs, not for the finer level's. Where the file is not such a TIFF the reader
is None and OpenSlide decodes as before.

Pixels equal OpenSlide's read of the finer level shrunk with INTER_AREA within about one
grey level on average (tested on the sample Aperio slide and the benchmark slide).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: TIFF codes: JPEG compression, RGB and YCbCr photometric interpretations.
JPEG, RGB, YCBCR = 7, 2, 6

#: Reduction factors libjpeg's DCT scaling gives.
SCALES = (2, 4, 8)


@dataclass(frozen=True)
class JpegLevel:
    """One tiled JPEG page: size, tile size, tile offsets and byte counts (row-major),
    the shared JPEG tables, and whether the JPEG data are RGB (no YCbCr conversion)."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    tables: bytes
    rgb: bool


class JpegTileReader:
    """Reduced decoding of the tiled JPEG levels of one file, matched to slide levels by
    their (width, height). Thread-safe (positional reads on one descriptor)."""

    def __init__(self, path: Path, levels: dict[tuple[int, int], JpegLevel]) -> None:
        self.path = path
        self.levels = levels
        self.fd = os.open(path, os.O_RDONLY)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> JpegTileReader | None:
        """A reader for the file's tiled JPEG pages, None when it has none (or is not a
        TIFF tifffile can parse)."""
        import tifffile

        levels = {}
        try:
            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    level = _jpeg_level(page)
                    if level is not None:
                        levels.setdefault((level.width, level.height), level)
        except Exception:  # noqa: BLE001 - any parse failure: OpenSlide reads the file
            return None
        return cls(Path(path), levels) if levels else None

    def close(self) -> None:
        os.close(self.fd)

    def read(
        self, size: tuple[int, int], x: int, y: int, w: int, h: int, scale: int
    ) -> np.ndarray | None:
        """Pixels [x, x + w) x [y, y + h) of the level of `size` (w, h), in that level's
        pixels divided by `scale` (2, 4 or 8): (h, w, 3) uint8 RGB, white outside the
        image. None when the level is not a tiled JPEG page or the scale does not divide
        its tiles."""
        level = self.levels.get(size)
        if level is None or scale not in SCALES:
            return None
        tw, th = level.tile_w // scale, level.tile_h // scale
        if tw * scale != level.tile_w or th * scale != level.tile_h:
            return None
        out = np.full((h, w, 3), 255, np.uint8)
        cols = -(-level.width // level.tile_w)
        rows = -(-level.height // level.tile_h)
        valid_w, valid_h = -(-level.width // scale), -(-level.height // scale)
        for r in range(max(0, y // th), min(rows, -(-(y + h) // th))):
            for c in range(max(0, x // tw), min(cols, -(-(x + w) // tw))):
                tile = self._tile(level, r * cols + c, scale, tw, th)
                # the part of the tile inside the image and the requested box
                x0, y0 = max(x, c * tw), max(y, r * th)
                x1 = min(x + w, (c + 1) * tw, valid_w)
                y1 = min(y + h, (r + 1) * th, valid_h)
                if x1 > x0 and y1 > y0:
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                        y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw
                    ]
        return out

    def _tile(self, level: JpegLevel, index: int, scale: int, tw: int, th: int) -> np.ndarray:
        from PIL import Image, ImageFile

        count = level.counts[index]
        if not count:  # a tile the scanner left out: glass
            return np.full((th, tw, 3), 255, np.uint8)
        data = os.pread(self.fd, count, level.offsets[index])
        if level.tables:  # abbreviated stream: tables (without EOI) + tile (without SOI)
            data = level.tables[:-2] + data[2:]
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (level.tile_w // scale, level.tile_h // scale))
        if level.rgb:  # RGB components: no YCbCr -> RGB conversion (as OpenSlide)
            t = image.tile[0]
            image.tile = [ImageFile._Tile(t.codec_name, t.extents, t.offset, ("RGB", "RGB"))]
        pixels = np.asarray(image.convert("RGB"))
        if pixels.shape[:2] != (th, tw):  # a scale libjpeg did not give: not ours to fix
            raise ValueError(f"{self.path}: tile decoded at {pixels.shape[:2]}, not {(th, tw)}")
        return pixels


def _jpeg_level(page: object) -> JpegLevel | None:
    """The page as a tiled 3-sample JPEG level, else None."""
    p = page
    if not (
        getattr(p, "is_tiled", False)
        and int(p.compression) == JPEG  # type: ignore[attr-defined]
        and int(p.photometric) in (RGB, YCBCR)  # type: ignore[attr-defined]
        and p.samplesperpixel == 3  # type: ignore[attr-defined]
        and int(p.planarconfig) == 1  # type: ignore[attr-defined]
        and p.imagedepth == 1  # type: ignore[attr-defined]
    ):
        return None
    shape = p.shape  # type: ignore[attr-defined]
    return JpegLevel(
        width=int(shape[1]),
        height=int(shape[0]),
        tile_w=int(p.tilewidth),  # type: ignore[attr-defined]
        tile_h=int(p.tilelength),  # type: ignore[attr-defined]
        offsets=tuple(int(o) for o in p.dataoffsets),  # type: ignore[attr-defined]
        counts=tuple(int(c) for c in p.databytecounts),  # type: ignore[attr-defined]
        tables=bytes(p.jpegtables or b""),  # type: ignore[attr-defined]
        rgb=int(p.photometric) == RGB,  # type: ignore[attr-defined]
    )
