"""Pyramidal slides through OpenSlide (svs, ndpi, mrxs, scn, tiled tiff, ...)."""

from __future__ import annotations

import threading

import numpy as np
import openslide

from cbir.errors import SlideReadError
from cbir.slides.base import Slide, SlideInfo
from cbir.slides.jpeg_tiles import JpegTileReader


class OpenSlideSlide(Slide):
    """A slide read through `openslide.OpenSlide`; RGBA is flattened onto white."""

    def __init__(self, handle: openslide.OpenSlide, info: SlideInfo) -> None:
        self.handle = handle
        self.info = info
        self.level_dimensions = tuple(handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        self._jpeg: JpegTileReader | None | bool = False  # False: not looked at yet
        self._jpeg_lock = threading.Lock()

    def read_level_reduced(
        self, level: int, x: int, y: int, w: int, h: int, scale: int
    ) -> np.ndarray | None:
        """JPEG tiles of a tiled TIFF decoded at reduced size (cbir.slides.jpeg_tiles)."""
        with self._jpeg_lock:
            if self._jpeg is False:
                self._jpeg = JpegTileReader.open(self.info.path)
        reader = self._jpeg
        if not isinstance(reader, JpegTileReader):
            return None
        return reader.read(self.level_dimensions[level], x, y, w, h, scale)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            rgba = np.asarray(self.handle.read_region((x, y), level, (w, h)))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(f"{self.info.path}: cannot read pixels ({exc})") from exc
        if rgba[..., 3].min() == 255:
            return np.ascontiguousarray(rgba[..., :3])
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        # Composite onto white: transparent pixels lie outside the scanned area.
        rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return rgb.round().astype(np.uint8)

    def stored_thumbnail(self) -> np.ndarray | None:
        """The file's associated "thumbnail" image (Aperio and others) when its aspect
        ratio matches level 0 within 1%, else None."""
        image = self.handle.associated_images.get("thumbnail")
        if image is None:
            return None
        w, h = image.size
        width, height = self.dimensions
        if abs((w / h) / (width / height) - 1) > 0.01:
            return None
        return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        self.handle.close()
        if isinstance(self._jpeg, JpegTileReader):
            self._jpeg.close()
