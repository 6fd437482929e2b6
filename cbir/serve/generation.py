"""One published bundle generation as the server holds it: its `Index`, its open slide
handles and their Deep Zoom pyramids. Requests lease it; it is closed only when it has
been retired (a newer generation was published) and its last lease has ended, so a
writer publishing never closes a handle a request is reading from."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from openslide import OpenSlideCache
from openslide.deepzoom import DeepZoomGenerator

from cbir.errors import CbirError
from cbir.serve.imagery import DZ_OVERLAP, DZ_TILE, deep_zoom_view

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.slides.base import Slide

#: Open slide handles per generation: at most this many, holding at most this many bytes
#: of decoded pixels (plain images are held whole; OpenSlide handles count 0 here, their
#: decoded tiles live in the one shared OpenSlide cache below).
MAX_OPEN_SLIDES = 32
MAX_SLIDE_BYTES = 256 << 20
#: One OpenSlide tile cache shared by every handle of every generation (bytes).
OPENSLIDE_CACHE_BYTES = 64 << 20
_OPENSLIDE_CACHE: OpenSlideCache | None = None


def openslide_cache() -> OpenSlideCache:
    """The process-wide OpenSlide tile cache (made on first use)."""
    global _OPENSLIDE_CACHE
    if _OPENSLIDE_CACHE is None:
        _OPENSLIDE_CACHE = OpenSlideCache(OPENSLIDE_CACHE_BYTES)
    return _OPENSLIDE_CACHE


class SlideNotFound(CbirError):
    """A request named a slide id the leased generation does not have (HTTP 404)."""


class RefCount:
    """Leases on a closable thing: `close()` runs once, when it has been retired and its
    last lease has ended (whichever comes last)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases = 0
        self._retired = False
        self.closed = False

    def acquire(self) -> None:
        with self._lock:
            if self.closed:
                raise CbirError("internal: lease on a closed generation")
            self._leases += 1

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            done = self._retired and self._leases == 0 and not self.closed
            self.closed = self.closed or done
        if done:
            self.close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            done = self._leases == 0 and not self.closed
            self.closed = self.closed or done
        if done:
            self.close()

    @property
    def leases(self) -> int:
        return self._leases

    def close(self) -> None:  # noqa: B027 - what a subclass frees
        pass


@dataclass(eq=False)
class OpenSlideEntry(RefCount):
    """An open slide of one generation and its Deep Zoom pyramid (made on first use)."""

    slide: Slide
    nbytes: int
    _zoom: DeepZoomGenerator | None = None
    _zoom_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        RefCount.__init__(self)

    def deep_zoom(self) -> DeepZoomGenerator:
        with self._zoom_lock:
            if self._zoom is None:
                self._zoom = DeepZoomGenerator(
                    deep_zoom_view(self.slide), DZ_TILE, DZ_OVERLAP, limit_bounds=False
                )
            return self._zoom

    def close(self) -> None:
        self._zoom = None
        self.slide.close()


class Generation(RefCount):
    """A leased generation: `index` (searched under `search_lock`, an Index is not meant
    for concurrent searches) and an LRU of open slides bounded by MAX_OPEN_SLIDES and
    MAX_SLIDE_BYTES (an evicted slide closes when its last lease ends)."""

    def __init__(self, index: Index, stamp: tuple[int, int]) -> None:
        super().__init__()
        self.index = index
        self.number = index.bundle.manifest.generation
        self.created = index.bundle.manifest.created
        self.stamp = stamp  # manifest (mtime ns, size) it was opened at
        self.search_lock = threading.Lock()
        self._slides_lock = threading.Lock()
        self._slides: OrderedDict[int, OpenSlideEntry] = OrderedDict()

    @contextmanager
    def slide(self, slide_id: int) -> Iterator[OpenSlideEntry]:
        """The open slide with this id, leased for the block (SlideNotFound if none)."""
        entry = self._entry(slide_id)
        try:
            yield entry
        finally:
            entry.release()

    def _entry(self, slide_id: int) -> OpenSlideEntry:
        from cbir.slides.open import open_slide

        record = self.index.slides.get(slide_id)
        if record is None:
            raise SlideNotFound(f"no slide {slide_id} in this bundle")
        with self._slides_lock:
            entry = self._slides.get(slide_id)
            if entry is not None:
                self._slides.move_to_end(slide_id)
                entry.acquire()
                return entry
            slide = open_slide(record.info.path, record.info.base_magnification)
            entry = OpenSlideEntry(slide, _held_bytes(slide))
            entry.acquire()
            self._slides[slide_id] = entry
            self._evict()
            return entry

    def _evict(self) -> None:
        """Drop least recently used slides beyond the bounds (never the newest one)."""
        while len(self._slides) > 1 and (
            len(self._slides) > MAX_OPEN_SLIDES
            or sum(e.nbytes for e in self._slides.values()) > MAX_SLIDE_BYTES
        ):
            _, old = self._slides.popitem(last=False)
            old.retire()

    @property
    def open_slides(self) -> int:
        return len(self._slides)

    def close(self) -> None:
        with self._slides_lock:
            entries, self._slides = list(self._slides.values()), OrderedDict()
        for entry in entries:
            entry.retire()
        self.index.close()


def _held_bytes(slide: Slide) -> int:
    """Decoded pixels a slide handle holds in memory (bytes): a plain image's array; 0 for
    OpenSlide handles, whose tiles go to the shared cache."""
    from cbir.slides.openslide_slide import OpenSlideSlide

    if isinstance(slide, OpenSlideSlide):
        slide.handle.set_cache(openslide_cache())
        return 0
    image = getattr(slide, "image", None)
    return int(image.nbytes) if image is not None else 0
