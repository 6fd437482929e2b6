"""The embedded sample slide: scikit-image's IHC image as a tiled pyramidal TIFF.

scikit-image ships `data.immunohistochemistry()` (512 x 512 px, a real IHC section).
It is upscaled 4x to 2048 x 2048 px and written at 0.25 um/px (40x) with levels at
downsample 1, 2 and 4, which OpenSlide reads as a `generic-tiff` slide.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import tifffile

SAMPLE_MPP = 0.25  # um/px at level 0 (40x)
SAMPLE_UPSCALE = 4


def sample_image() -> np.ndarray:
    """(2048, 2048, 3) uint8 RGB level-0 pixels of the sample slide."""
    from skimage import data

    ihc = data.immunohistochemistry()
    size = (ihc.shape[1] * SAMPLE_UPSCALE, ihc.shape[0] * SAMPLE_UPSCALE)
    return cv2.resize(ihc, size, interpolation=cv2.INTER_CUBIC)


def write_pyramidal_tiff(
    path: str | os.PathLike[str], image: np.ndarray, mpp: float, levels: int = 3
) -> Path:
    """Write (h, w, 3) uint8 as a tiled pyramidal TIFF, each level its own page (deflate);
    `mpp` micrometres per level-0 px. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        level = image
        for i in range(levels):
            ds = 2**i
            res = 1e4 / (mpp * ds)  # pixels per centimetre
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=1 if i else 0,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
            level = cv2.resize(
                level, (level.shape[1] // 2, level.shape[0] // 2), interpolation=cv2.INTER_AREA
            )
    tmp.replace(path)
    return path


def write_sample_slide(path: Path) -> Path:
    """Write the sample slide to `path` (a .tif) and return it."""
    return write_pyramidal_tiff(path, sample_image(), SAMPLE_MPP)
