#!/usr/bin/env python
"""Write a large Aperio-like benchmark slide tiled from real tissue.

What it writes
    An Aperio SVS-style tiled pyramidal TIFF (`openslide` detects it as vendor "aperio"):
    level 0 of `width` x `height` px at `mpp` um/px (default 40,000 x 30,000 at 0.25 um/px,
    "AppMag = 40"), levels at downsample 4, 16 and 64 (Aperio's steps; a level is kept while
    its longer side is at least one tile), and a stripped JPEG "thumbnail" as the second
    directory, as a scanner writes it. Tiles are 256 x 256 px, JPEG (quality 85, YCbCr
    4:2:0, like most scanners' output) or JPEG 2000 (Aperio compression 33005, ~15:1).

    The picture: a few blob-shaped tissue pieces (together `tissue_fraction` of the slide
    area, soft faint edges) on near-white glass (RGB ~ (241, 239, 236) with +-2 noise).
    The tissue is a mosaic of real H&E at 0.5 um/px, upsampled 2x to 0.25 um/px: the
    CRC-VAL-HE-7K tiles in ../shared/data/tiles-crc9 (all classes but BACK) and tissue-rich
    224 px crops of ../shared/data/wsi/cmu-1-small-region.svs, each cell flipped/rotated at
    random (8 orientations), the class changing by regions of a few cells (not a uniform
    patchwork), alternate rows shifted by half a cell. So decoding and tissue detection
    meet what they meet on a scanner's file. Deterministic given the seed.

How
    Tiles are rendered and encoded with OpenCV (libjpeg-turbo / OpenJPEG, no imagecodecs
    needed) on a thread pool (one thread per CPU), in raster order, and streamed into the
    file by a small TIFF writer (tifffile cannot store pre-encoded JPEG tiles without
    imagecodecs). The whole level 0 is never in memory: only level 1 (1/16 of the pixels,
    225 MB for 40,000 x 30,000) is kept, built from the level-0 tiles as they go, and the
    lower levels and the thumbnail come from it. BigTIFF is used only for very large sizes.

Run (from the repository root, with the venv active)
    python tools/make_bench_slide.py /tmp/bench-40x-jpeg.svs
    python tools/make_bench_slide.py /tmp/small.svs --width 4096 --height 3072 --jpeg2000
"""

from __future__ import annotations

import argparse
import collections
import csv
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"

#: Bumped when the output changes for the same arguments (bench_index names files by it).
VERSION = 1
TILE = 256  # stored tile side, px (Aperio writes 240 or 256)
LEVEL_STEP = 4  # downsample between pyramid levels (Aperio: 1, 4, 16, 64)
MAX_LEVELS = 4
THUMBNAIL_SIDE = 1024  # longer side of the stored thumbnail, px
JPEG_QUALITY = 85
JP2K_RATIO = 15  # target compression ratio of JPEG 2000 tiles (Aperio Q=70 is ~ 10-20:1)
SOURCE_MPP = 0.5  # um/px of the source tissue patches
PATCH = 224  # source patch side at SOURCE_MPP, px
FIELD_STEP = 64  # level-0 px per pixel of the low-resolution tissue field
EDGE = 0.08  # width of the soft tissue edge, in tissue-field units
#: Source tiles bluer than this (mean B - R) are left out: some crc9 DEB tiles are violet,
#: unlike H&E.
MAX_BLUE_OVER_RED = 25.0
GLASS_RGB = (241.0, 239.0, 236.0)
GLASS_NOISE = 2  # +- grey levels of glass noise
COMPRESSIONS = ("jpeg", "jpeg2000")
# TIFF codes
COMPRESSION_JPEG, COMPRESSION_APERIO_JP2K_RGB = 7, 33005
PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6


# --------------------------------------------------------------------------- TIFF writer


class TiffStream:
    """Minimal little-endian (Big)TIFF writer of 8-bit RGB pages whose tiles or single
    strip arrive already encoded. Pages are chained in the order `finish` is given."""

    SHORT, LONG, RATIONAL, ASCII, LONG8 = 3, 4, 5, 2, 16
    _SIZES = {2: 1, 3: 2, 4: 4, 5: 8, 16: 8}
    _CODES = {3: "H", 4: "I", 16: "Q"}

    def __init__(self, fh: BinaryIO, bigtiff: bool) -> None:
        self.fh, self.big = fh, bigtiff
        self.ifds: list[int] = []
        if bigtiff:
            fh.write(b"II+\x00" + struct.pack("<HHQ", 8, 0, 0))
        else:
            fh.write(b"II*\x00" + struct.pack("<I", 0))

    def _align(self) -> int:
        pos = self.fh.tell()
        if pos % 8:
            self.fh.write(b"\x00" * (8 - pos % 8))
        return self.fh.tell()

    def write_page(
        self,
        chunks: Iterable[bytes],
        width: int,
        height: int,
        compression: int,
        photometric: int,
        description: str,
        tile: int | None = TILE,
        subfiletype: int = 0,
        resolution_cm: float | None = None,
    ) -> int:
        """Write the encoded tiles (raster order) or, with tile=None, one strip; then the
        page's IFD. Returns the IFD's index for `finish`."""
        offsets, counts = [], []
        for chunk in chunks:
            offsets.append(self._align())
            counts.append(len(chunk))
            self.fh.write(chunk)
        if tile is not None:
            expected = math.ceil(width / tile) * math.ceil(height / tile)
            if len(offsets) != expected:
                raise ValueError(f"{len(offsets)} tiles for a page needing {expected}")
        elif len(offsets) != 1:
            raise ValueError("a stripped page takes one strip")
        offset_type = self.LONG8 if self.big else self.LONG
        tags: list[tuple[int, int, object]] = [
            (254, self.LONG, [subfiletype]),
            (256, self.LONG, [width]),
            (257, self.LONG, [height]),
            (258, self.SHORT, [8, 8, 8]),
            (259, self.SHORT, [compression]),
            (262, self.SHORT, [photometric]),
            (270, self.ASCII, description.encode("ascii") + b"\x00"),
            (277, self.SHORT, [3]),
            (284, self.SHORT, [1]),
        ]
        if tile is None:
            tags += [(273, offset_type, offsets), (278, self.LONG, [height])]
            tags += [(279, self.LONG, counts)]
        else:
            tags += [(322, self.LONG, [tile]), (323, self.LONG, [tile])]
            tags += [(324, offset_type, offsets), (325, self.LONG, counts)]
        if resolution_cm is not None:
            res = (round(resolution_cm * 1000), 1000)
            tags += [(282, self.RATIONAL, [res]), (283, self.RATIONAL, [res])]
            tags += [(296, self.SHORT, [3])]
        if photometric == PHOTOMETRIC_YCBCR:
            tags += [(530, self.SHORT, [2, 2])]  # YCbCrSubSampling 4:2:0
            black_white = [(0, 1), (255, 1), (128, 1), (255, 1), (128, 1), (255, 1)]
            tags += [(532, self.RATIONAL, black_white)]
        self.ifds.append(self._write_ifd(sorted(tags, key=lambda t: t[0])))
        return len(self.ifds) - 1

    def _pack(self, kind: int, values: object) -> tuple[int, bytes]:
        if kind == self.ASCII:
            data = bytes(values)  # type: ignore[arg-type]
            return len(data), data
        seq = list(values)  # type: ignore[call-overload]
        if kind == self.RATIONAL:
            return len(seq), b"".join(struct.pack("<II", n, d) for n, d in seq)
        if kind == self.LONG and any(v >= 1 << 32 for v in seq):
            raise ValueError("offset beyond 4 GiB in a classic TIFF: use bigtiff=True")
        return len(seq), struct.pack(f"<{len(seq)}{self._CODES[kind]}", *seq)

    def _write_ifd(self, tags: list[tuple[int, int, object]]) -> int:
        inline = 8 if self.big else 4
        entry = 20 if self.big else 12
        count_fmt, head, tail = ("<Q", 8, 8) if self.big else ("<H", 2, 4)
        start = self._align()
        extra_at = start + head + entry * len(tags) + tail
        entries, extra = [], bytearray()
        for code, kind, values in tags:
            count, data = self._pack(kind, values)
            if len(data) <= inline:
                field = data.ljust(inline, b"\x00")
            else:
                while (extra_at + len(extra)) % 2:
                    extra.append(0)
                ref = extra_at + len(extra)
                field = struct.pack("<Q" if self.big else "<I", ref)
                extra += data
            count_bytes = struct.pack("<Q" if self.big else "<I", count)
            entries.append(struct.pack("<HH", code, kind) + count_bytes + field)
        self.fh.write(struct.pack(count_fmt, len(tags)) + b"".join(entries))
        self.fh.write(b"\x00" * tail)  # next-IFD pointer, set by finish()
        self.fh.write(bytes(extra))
        return start

    def finish(self, order: list[int]) -> None:
        """Chain the IFDs in `order` (indexes returned by write_page)."""
        fmt, count_fmt, head, entry = ("<Q", "<Q", 8, 20) if self.big else ("<I", "<H", 2, 12)
        self.fh.seek(8 if self.big else 4)
        self.fh.write(struct.pack(fmt, self.ifds[order[0]]))
        for this, nxt in zip(order, [*order[1:], None], strict=True):
            start = self.ifds[this]
            self.fh.seek(start)
            (n,) = struct.unpack(count_fmt, self.fh.read(head))
            self.fh.seek(start + head + entry * n)
            self.fh.write(struct.pack(fmt, 0 if nxt is None else self.ifds[nxt]))
        self.fh.seek(0, os.SEEK_END)


# --------------------------------------------------------------------------- encoders


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 -> a baseline JFIF stream (YCbCr 4:2:0), what TIFF Photometric=YCbCr says."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode JPEG")
    return buf.tobytes()


def jpeg2000_available() -> bool:
    """Whether this OpenCV build can write JPEG 2000 (OpenJPEG)."""
    try:
        ok, _ = cv2.imencode(".jp2", np.zeros((64, 64, 3), np.uint8))
    except cv2.error:
        return False
    return bool(ok)


def encode_jpeg2000(rgb: np.ndarray, ratio: int = JP2K_RATIO) -> bytes:
    """RGB uint8 -> a raw JPEG 2000 codestream (irreversible, with the colour transform),
    what Aperio's compression 33005 holds: the 'jp2c' box of OpenCV's JP2 file."""
    params = [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, max(1, round(1000 / ratio))]
    ok, buf = cv2.imencode(".jp2", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise RuntimeError("OpenCV could not encode JPEG 2000")
    data, i = buf.tobytes(), 0
    while i + 8 <= len(data):
        size, box = struct.unpack(">I4s", data[i : i + 8])
        head = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[i + 8 : i + 16])
            head = 16
        elif size == 0:
            size = len(data) - i
        if box == b"jp2c":
            return data[i + head : i + size]
        i += size
    raise RuntimeError("no codestream box in OpenCV's JPEG 2000 output")


# --------------------------------------------------------------------------- tissue source


def load_patches(data: Path) -> dict[str, list[np.ndarray]]:
    """Real H&E patches (PATCH x PATCH px RGB at ~0.5 um/px) by class: the tiles-crc9
    classes but BACK, and "CMU" crops of cmu-1-small-region.svs that are >= 90% tissue.
    Raises FileNotFoundError naming what is missing."""
    crc9, cmu = data / "tiles-crc9", data / "wsi" / "cmu-1-small-region.svs"
    labels = crc9 / "labels.csv"
    if not labels.is_file() or not cmu.is_file():
        raise FileNotFoundError(f"{labels} or {cmu} not found (no ../shared/data?)")
    patches: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    with labels.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["label"] == "BACK":
                continue
            bgr = cv2.imread(str(crc9 / row["path"]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise FileNotFoundError(f"{crc9 / row['path']}: unreadable tile")
            rgb = cv2.resize(bgr[..., ::-1], (PATCH, PATCH))
            red, _, blue = rgb.reshape(-1, 3).mean(0)
            if blue - red <= MAX_BLUE_OVER_RED:
                patches[row["label"]].append(rgb)
    import openslide  # noqa: PLC0415  (only here: tile rendering does not need it)

    from cbir.slides.tissue import tissue_mask  # noqa: PLC0415

    with openslide.OpenSlide(str(cmu)) as slide:
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    mask = tissue_mask(rgb)
    for y in range(0, rgb.shape[0] - PATCH + 1, PATCH // 2):
        for x in range(0, rgb.shape[1] - PATCH + 1, PATCH // 2):
            if mask[y : y + PATCH, x : x + PATCH].mean() >= 0.9:
                patches["CMU"].append(np.ascontiguousarray(rgb[y : y + PATCH, x : x + PATCH]))
    return {k: patches[k] for k in sorted(patches)}


def orient(patch: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square patch (a view)."""
    view = np.rot90(patch, k % 4)
    return view[:, ::-1] if k >= 4 else view


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise of `shape` smooth over ~`scale` px."""
    small = (max(2, round(shape[1] / scale)), max(2, round(shape[0] / scale)))
    noise = rng.standard_normal((small[1], small[0])).astype(np.float32)
    field = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def tissue_field(
    rng: np.random.Generator, width: int, height: int, fraction: float
) -> tuple[np.ndarray, float]:
    """A low-resolution (FIELD_STEP level-0 px per px) field whose part above the
    returned threshold is a few blob-shaped tissue pieces covering `fraction` of the slide,
    with a glass margin along the border."""
    fw, fh = math.ceil(width / FIELD_STEP) + 2, math.ceil(height / FIELD_STEP) + 2
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    field = np.zeros((fh, fw), np.float32)
    pieces = int(rng.integers(3, 5))  # 3 in a row or 4 in a 2 x 2 layout, jittered
    cols = 3 if pieces == 3 else 2
    area = fraction * fw * fh / pieces  # field px per piece (before the threshold)
    for i in range(pieces):
        cx = ((i % cols) + 0.5) / cols * fw + rng.uniform(-0.05, 0.05) * fw
        cy = ((i // cols) + 0.5) / (pieces // cols) * fh + rng.uniform(-0.06, 0.06) * fh
        aspect = rng.uniform(1.0, 1.8)
        rx = math.sqrt(area / math.pi * aspect)
        ry = rx / aspect
        angle = rng.uniform(0, math.pi)
        ca, sa = math.cos(angle), math.sin(angle)
        u = ((xx - cx) * ca + (yy - cy) * sa) / rx
        v = (-(xx - cx) * sa + (yy - cy) * ca) / ry
        field = np.maximum(field, np.exp(-(u * u + v * v)))
    short = min(fw, fh)  # lobes and ragged edges scale with the slide; fine fringe does not
    field += 0.18 * smooth_noise(rng, field.shape, 0.22 * short)
    field += 0.06 * smooth_noise(rng, field.shape, max(2.0, 0.06 * short))
    field += 0.03 * smooth_noise(rng, field.shape, 4.0)
    margin = 0.08 * min(fw, fh)
    border = np.minimum(np.minimum(xx, fw - 1 - xx), np.minimum(yy, fh - 1 - yy))
    taper = np.clip(border / max(margin, 1.0), 0, 1)
    field *= taper * taper * (3 - 2 * taper)  # smoothstep: no tissue on the slide's edge
    core = field[1:-1, 1:-1]
    threshold = float(np.quantile(core, 1.0 - fraction))
    return field, threshold


# --------------------------------------------------------------------------- rendering


@dataclass
class Scene:
    """Everything a tile's pixels depend on (all from the seed)."""

    seed: int
    width: int
    height: int
    patches: list[np.ndarray]  # PATCH x PATCH RGB at SOURCE_MPP
    cells: np.ndarray  # (rows, cols + 1, 2) int: patch index, orientation
    cell_px: float  # level-0 px per mosaic cell (= PATCH * SOURCE_MPP / mpp)
    field: np.ndarray  # tissue field, FIELD_STEP level-0 px per px
    threshold: float
    glass_noise: np.ndarray  # (512, 512, 3) int16

    @classmethod
    def build(
        cls,
        patches_by_class: dict[str, list[np.ndarray]],
        width: int,
        height: int,
        mpp: float,
        seed: int,
        tissue_fraction: float,
    ) -> Scene:
        rng = np.random.default_rng(seed)
        field, threshold = tissue_field(rng, width, height, tissue_fraction)
        classes = list(patches_by_class)
        patches = [p for c in classes for p in patches_by_class[c]]
        first = np.cumsum([0] + [len(patches_by_class[c]) for c in classes])
        cell_px = PATCH * SOURCE_MPP / mpp
        rows, cols = math.ceil(height / cell_px) + 1, math.ceil(width / cell_px) + 2
        # class regions of ~5 x 5 cells, then a random patch of the class and orientation
        region = rng.integers(0, len(classes), (rows // 5 + 2, cols // 5 + 2))
        cls_of = cv2.resize(
            region.astype(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST
        ).astype(np.int64)
        pick = rng.random((rows, cols))
        counts = np.diff(first)[cls_of]
        index = first[:-1][cls_of] + np.minimum((pick * counts).astype(np.int64), counts - 1)
        cells = np.stack([index, rng.integers(0, 8, (rows, cols))], axis=-1)
        noise = rng.integers(-GLASS_NOISE, GLASS_NOISE + 1, (512, 512, 3)).astype(np.int16)
        return cls(seed, width, height, patches, cells, cell_px, field, threshold, noise)

    def alpha(self, x0: int, y0: int, size: int, step: int) -> np.ndarray:
        """(size, size) float32 tissue opacity of level-0 px x0 + step * i (bilinear)."""
        s = step / FIELD_STEP
        m = np.float32([[s, 0, (x0 + 0.5 * step) / FIELD_STEP - 0.5]])
        m = np.vstack([m, [0, s, (y0 + 0.5 * step) / FIELD_STEP - 0.5]]).astype(np.float32)
        f = cv2.warpAffine(
            self.field,
            m,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return np.clip((f - self.threshold) / EDGE + 0.5, 0.0, 1.0)

    def tissue(self, x0: int, y0: int, size: int) -> np.ndarray:
        """(size, size, 3) uint8 mosaic at level-0 px (x0, y0): assembled at the source
        resolution with a 2 px margin, then upsampled (cubic)."""
        scale = self.cell_px / PATCH  # level-0 px per source px (2 at 0.25 um/px)
        margin = 2
        sx0 = math.floor(x0 / scale) - margin
        sy0 = math.floor(y0 / scale) - margin
        n = math.ceil(size / scale) + 2 * margin + 1
        canvas = np.empty((n, n, 3), np.uint8)
        for row in range(sy0 // PATCH, (sy0 + n - 1) // PATCH + 1):
            shift = (PATCH // 2) * (row % 2)  # brick layout: alternate rows half a cell
            ya, yb = max(sy0, row * PATCH), min(sy0 + n, (row + 1) * PATCH)
            for col in range((sx0 + shift) // PATCH, (sx0 + shift + n - 1) // PATCH + 1):
                xa = max(sx0, col * PATCH - shift)
                xb = min(sx0 + n, (col + 1) * PATCH - shift)
                r = min(max(row, 0), self.cells.shape[0] - 1)
                c = min(max(col, 0), self.cells.shape[1] - 1)
                idx, k = self.cells[r, c]
                src = orient(self.patches[idx], int(k))
                py, px = ya - row * PATCH, xa - (col * PATCH - shift)
                canvas[ya - sy0 : yb - sy0, xa - sx0 : xb - sx0] = src[
                    py : py + yb - ya, px : px + xb - xa
                ]
        big = round(n * scale)
        up = cv2.resize(canvas, (big, big), interpolation=cv2.INTER_CUBIC)
        ox = round(x0 - sx0 * scale)
        oy = round(y0 - sy0 * scale)
        return up[oy : oy + size, ox : ox + size]

    def glass(self, row: int, col: int, size: int) -> np.ndarray:
        """(size, size, 3) int16 glass with noise (a random crop of the noise bank)."""
        rng = np.random.default_rng((self.seed, row, col))
        oy, ox = rng.integers(0, self.glass_noise.shape[0] - size + 1, 2)
        noise = self.glass_noise[oy : oy + size, ox : ox + size]
        return noise + np.asarray(GLASS_RGB, np.int16)

    def tile(self, row: int, col: int) -> np.ndarray:
        """Level-0 tile (row, col): (TILE, TILE, 3) uint8 RGB."""
        x0, y0 = col * TILE, row * TILE
        a = self.alpha(x0, y0, TILE, 1)
        glass = self.glass(row, col, TILE)
        if float(a.max()) <= 0.0:
            return glass.astype(np.uint8)
        tissue = self.tissue(x0, y0, TILE)
        if float(a.min()) >= 1.0:
            return tissue
        a3 = a[..., None]
        out = tissue.astype(np.float32) * a3 + glass.astype(np.float32) * (1.0 - a3)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[..., bytes], items: Iterable[tuple], window: int
) -> Iterator[bytes]:
    """pool.map with at most `window` tasks in flight, results in order."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, *item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) per level: downsample LEVEL_STEP**i while the longer side >= TILE."""
    sizes = [(width, height)]
    while len(sizes) < MAX_LEVELS:
        ds = LEVEL_STEP ** len(sizes)
        w, h = width // ds, height // ds
        if max(w, h) < TILE or min(w, h) < 1:
            break
        sizes.append((w, h))
    return sizes


def _tiles_of(image: np.ndarray, width: int, height: int) -> Iterator[tuple[np.ndarray]]:
    """Edge-padded TILE x TILE tiles of image[:height, :width] in raster order."""
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            t = image[y : min(y + TILE, height), x : min(x + TILE, width)]
            if t.shape[:2] != (TILE, TILE):
                pad = ((0, TILE - t.shape[0]), (0, TILE - t.shape[1]), (0, 0))
                t = np.pad(t, pad, mode="edge")
            yield (t,)


def make_bench_slide(
    path: str | os.PathLike[str],
    width: int = 40_000,
    height: int = 30_000,
    mpp: float = 0.25,
    compression: str = "jpeg",
    seed: int = 0,
    tissue_fraction: float = 0.42,
    data: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    bigtiff: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the benchmark slide (see the module docstring) to `path`; return it.

    compression: "jpeg" (quality 85, YCbCr 4:2:0) or "jpeg2000" (Aperio 33005).
    tissue_fraction: share of the slide area that is tissue (0.05..0.95).
    data: the shared data folder (default ../shared/data from the repository root).
    Written to a temporary name and renamed, so an interrupted run leaves no slide.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    if not 0.05 <= tissue_fraction <= 0.95:
        raise ValueError(f"tissue_fraction {tissue_fraction} must be in [0.05, 0.95]")
    if width < TILE or height < TILE or mpp <= 0:
        raise ValueError(f"need width, height >= {TILE} and mpp > 0")
    if compression == "jpeg2000" and not jpeg2000_available():
        raise RuntimeError("this OpenCV build cannot write JPEG 2000 (no OpenJPEG)")
    say = log or (lambda msg: None)
    out = Path(path)
    start = time.perf_counter()
    patches = load_patches(Path(data) if data is not None else DEFAULT_DATA)
    scene = Scene.build(patches, width, height, mpp, seed, tissue_fraction)
    say(
        f"{sum(map(len, patches.values()))} source patches in {len(patches)} classes; "
        f"writing {width} x {height} px, {compression}, seed {seed}"
    )
    if compression == "jpeg":
        encode, code, photometric = encode_jpeg, COMPRESSION_JPEG, PHOTOMETRIC_YCBCR
        codec_text = f"JPEG/RGB Q={JPEG_QUALITY}"
    else:
        encode, code = encode_jpeg2000, COMPRESSION_APERIO_JP2K_RGB
        photometric, codec_text = PHOTOMETRIC_RGB, f"J2K/KDU R={JP2K_RATIO}"
    sizes = level_sizes(width, height)
    rows, cols = math.ceil(height / TILE), math.ceil(width / TILE)
    sub = TILE // LEVEL_STEP
    level1 = np.empty((rows * sub, cols * sub, 3), np.uint8)  # also the thumbnail's source
    app_mag = 10.0 / mpp
    mag_text = f"{app_mag:g}"
    size_text = f"{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    head = f"Aperio Image Library v12.0.15 \r\n{size_text}"
    big = bigtiff if bigtiff is not None else width * height > 5_000_000_000
    res_cm = 1e4 / mpp

    def level0_tile(r: int, c: int) -> bytes:
        rgb = scene.tile(r, c)
        level1[r * sub : (r + 1) * sub, c * sub : (c + 1) * sub] = cv2.resize(
            rgb, (sub, sub), interpolation=cv2.INTER_AREA
        )
        return encode(rgb)

    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = workers or os.cpu_count() or 1
    try:
        with tmp.open("w+b") as fh, ThreadPoolExecutor(threads) as pool:
            tiff = TiffStream(fh, big)
            cells = ((r, c) for r in range(rows) for c in range(cols))
            description = (
                f"{head} {codec_text}|AppMag = {mag_text}|StripeWidth = 2040"
                f"|ScanScope ID = CBIR-BENCH|Filename = cbir-bench-{seed}|MPP = {mpp:g}"
                f"|Generator = cbir tools/make_bench_slide.py seed={seed}"
            )
            pages = [
                tiff.write_page(
                    ordered_map(pool, level0_tile, cells, 4 * threads),
                    width,
                    height,
                    code,
                    photometric,
                    description,
                    resolution_cm=res_cm,
                )
            ]
            say(f"level 0 written in {time.perf_counter() - start:.1f} s")
            image = level1[: height // LEVEL_STEP, : width // LEVEL_STEP]
            images = [image]
            for i, (w, h) in enumerate(sizes[1:], start=1):
                if i > 1:
                    image = cv2.resize(
                        image[: sizes[i - 1][1], : sizes[i - 1][0]],
                        (w, h),
                        interpolation=cv2.INTER_AREA,
                    )
                tiles = ordered_map(pool, encode, _tiles_of(image, w, h), 4 * threads)
                desc = f"{head} -> {w}x{h} {codec_text}"
                pages.append(tiff.write_page(tiles, w, h, code, photometric, desc))
                if i > 1:
                    images.append(image)
            # the stored thumbnail, from the smallest level at least THUMBNAIL_SIDE wide
            big_enough = [im for im in images if max(im.shape[:2]) >= THUMBNAIL_SIDE]
            src = (big_enough or images)[-1]
            f = min(THUMBNAIL_SIDE / max(width, height), 1 / LEVEL_STEP)
            tw, th = max(16, round(width * f)), max(16, round(height * f))
            thumb = cv2.resize(src, (tw, th), interpolation=cv2.INTER_AREA)
            thumb_page = tiff.write_page(
                [encode_jpeg(thumb, 90)],
                tw,
                th,
                COMPRESSION_JPEG,
                PHOTOMETRIC_YCBCR,
                f"{head} -> {tw}x{th} JPEG/RGB Q=90",
                tile=None,
                subfiletype=1,
            )
            # Aperio order: level 0, thumbnail, the other levels
            tiff.finish([pages[0], thumb_page, *pages[1:]])
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    say(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, levels {sizes}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", help="slide file to write (.svs or .tif)")
    p.add_argument("--width", type=int, default=40_000, help="level-0 width, px")
    p.add_argument("--height", type=int, default=30_000, help="level-0 height, px")
    p.add_argument("--mpp", type=float, default=0.25, help="um/px at level 0 (0.25 = 40x)")
    p.add_argument("--jpeg2000", action="store_true", help="JPEG 2000 tiles instead of JPEG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tissue-fraction", type=float, default=0.42)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--workers", type=int, default=None, help="encoder threads (CPU count)")
    args = p.parse_args(argv)
    try:
        make_bench_slide(
            args.out,
            width=args.width,
            height=args.height,
            mpp=args.mpp,
            compression="jpeg2000" if args.jpeg2000 else "jpeg",
            seed=args.seed,
            tissue_fraction=args.tissue_fraction,
            data=args.data,
            workers=args.workers,
            log=lambda msg: print(f"[make_bench_slide] {msg}", file=sys.stderr, flush=True),
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"make_bench_slide: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
