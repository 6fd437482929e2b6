"""Hit crops: a hit's level-0 rectangle read from its slide at its magnification."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cbir.errors import CbirError
from cbir.search.hits import Hit
from cbir.slides import Slide, SlideInfo, open_slide


def safe_stem(name: str, limit: int = 60) -> str:
    """A file-name-safe stem of a slide or query name: `TCGA CR/7395.svs` -> `TCGA_CR_7395`."""
    stem = Path(name).stem if "." in Path(name).name else Path(name).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:limit] or "slide"


def crop_name(hit: Hit, width: int = 2) -> str:
    """`hits/01-cmu-1-small-region-20x.png`: rank (zero-padded), slide, magnification."""
    return f"hits/{hit.rank:0{width}d}-{safe_stem(hit.slide)}-{hit.magnification:g}x.png"


class SlideReader:
    """Slides opened once each, for reading many hits; close() releases them.

    `infos`: {slide id: SlideInfo as stored in the bundle}; the stored base magnification
    is used for slides whose file states none (they were indexed with a given one)."""

    def __init__(self, infos: Mapping[int, SlideInfo] | None = None) -> None:
        self.infos = dict(infos or {})
        self._open: dict[str, Slide] = {}

    def slide(self, hit: Hit) -> Slide:
        if hit.slide_path not in self._open:
            info = self.infos.get(hit.slide_id)
            base = info.base_magnification if info is not None else None
            self._open[hit.slide_path] = open_slide(hit.slide_path, base)
        return self._open[hit.slide_path]

    def read(self, hit: Hit) -> np.ndarray:
        """The hit at its magnification -> (round(h * s), round(w * s), 3) uint8 RGB,
        s = magnification / base: rows * tile_size x cols * tile_size px for tile and
        region hits. Raises `CbirError` naming the slide when it cannot be read."""
        try:
            return self.slide(hit).read_region(hit.x, hit.y, hit.w, hit.h, hit.magnification)
        except CbirError:
            raise
        except (OSError, ValueError) as exc:
            raise CbirError(f"{hit.slide_path}: cannot read hit {hit.rank} ({exc})") from exc

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
