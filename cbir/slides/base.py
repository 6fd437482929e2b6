"""The slide interface: level-0 geometry, magnification, and reads at a magnification."""

from __future__ import annotations

from abc import ABC, abstractmethod

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict


class SlideInfo(BaseModel):
    """What is known about a slide, as stored in the bundle."""

    model_config = ConfigDict(frozen=True)

    path: str
    name: str
    backend: str
    width: int  # level-0 pixels
    height: int
    level_count: int
    base_magnification: float
    magnification_source: str  # "objective-power" | "mpp" | "default"
    mpp: float | None  # um/px at level 0
    vendor: str | None = None


def magnification_from_mpp(mpp: float) -> float:
    """Objective magnification for a level-0 pixel size in um/px (40x ~ 0.25 um/px)."""
    return round(10.0 / mpp, 2)


class Slide(ABC):
    """A pyramidal or single-level image. Coordinates are level-0 pixels (x right, y down)."""

    info: SlideInfo
    level_dimensions: tuple[tuple[int, int], ...]  # (w, h) per level
    level_downsamples: tuple[float, ...]

    @abstractmethod
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Read a (h, w, 3) uint8 RGB block of `level`; (x, y) in level-0 pixels."""

    def read_level_reduced(
        self, level: int, x: int, y: int, w: int, h: int, scale: int
    ) -> np.ndarray | None:
        """Pixels [x, x + w) x [y, y + h) of `level` decoded at 1/`scale` (coordinates in
        that reduced grid): (h, w, 3) uint8 RGB, or None where the file cannot decode at
        reduced size (then read the level and shrink it)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) in level-0 pixels."""
        return self.info.width, self.info.height

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed `downsample`."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = level
        return best

    def read_region(self, x: int, y: int, w: int, h: int, magnification: float) -> np.ndarray:
        """Read the level-0 rectangle (x, y, w, h) at `magnification`.

        Returns (round(h * s), round(w * s), 3) uint8 RGB with s = magnification / base.
        """
        scale = magnification / self.info.base_magnification
        out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
        return self.read_resized(x, y, w, h, out_w, out_h)

    def read_resized(self, x: int, y: int, w: int, h: int, out_w: int, out_h: int) -> np.ndarray:
        """Read level-0 rectangle (x, y, w, h) from the best level, resized to (out_h, out_w, 3)."""
        level = self.best_level(w / out_w)
        ds = self.level_downsamples[level]
        lw, lh = max(1, round(w / ds)), max(1, round(h / ds))
        block = self.read_level(level, x, y, lw, lh)
        if block.shape[:2] != (out_h, out_w):
            block = cv2.resize(block, (out_w, out_h), interpolation=cv2.INTER_AREA)
        return block

    def stored_thumbnail(self) -> np.ndarray | None:
        """A whole-slide (h, w, 3) uint8 thumbnail stored in the file, if it has one."""
        return None

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """A whole-slide RGB thumbnail with longest side <= max_side.

        Returns ((h, w, 3) uint8, level-0 pixels per thumbnail pixel).
        """
        width, height = self.dimensions
        factor = max(width, height) / max_side
        factor = max(factor, 1.0)
        out_w, out_h = max(1, round(width / factor)), max(1, round(height / factor))
        return self.read_resized(0, 0, width, height, out_w, out_h), factor
