"""The server's bundle: opened once and kept warm, reopened when a writer (`cbir add`,
`remove`, `build-index --overwrite`) publishes a new generation."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cbir.manifest import MANIFEST, read_manifest

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.metadata import SlideRecord
    from cbir.slides.base import Slide


class BundleHolder:
    """One open `Index` shared by the request threads. `index()` checks the manifest
    (one stat per call) and swaps in the new generation when it changed; searches run
    one at a time under `lock` (an Index is not meant for concurrent searches)."""

    def __init__(
        self, root: str | os.PathLike[str], device: str | None = "auto", ray: str | None = None
    ) -> None:
        self.root = Path(root)
        self.device = device
        self.ray = ray  # shard the segments' indexes on this Ray cluster
        self.lock = threading.RLock()
        self._stamp: tuple[int, int] | None = None
        self._index: Index | None = None
        self._slides: dict[int, Slide] = {}
        self.generation = 0
        self._reopen()

    def _manifest_stamp(self) -> tuple[int, int]:
        st = (self.root / MANIFEST).stat()
        return st.st_mtime_ns, st.st_size

    def _reopen(self) -> None:
        from cbir.api import open_index

        stamp = self._manifest_stamp()
        manifest = read_manifest(self.root)
        if self._index is not None and (manifest.generation, manifest.created) == (
            self.generation,
            self._index.bundle.manifest.created,
        ):
            self._stamp = stamp
            return
        index = open_index(self.root, device=self.device, ray=self.ray)
        old, self._index = self._index, index
        self._stamp, self.generation = stamp, index.bundle.manifest.generation
        for slide in self._slides.values():
            slide.close()
        self._slides = {}
        if old is not None:
            old.close()

    def index(self) -> Index:
        """The live generation's Index (reopened here if a writer published a new one)."""
        with self.lock:
            try:
                changed = self._manifest_stamp() != self._stamp
            except OSError:  # a writer is replacing the manifest: keep what we have
                changed = False
            if changed:
                self._reopen()
            assert self._index is not None
            return self._index

    @contextmanager
    def searching(self) -> Iterator[Index]:
        """The Index, held for one search."""
        with self.lock:
            yield self.index()

    def slide_record(self, slide_id: int) -> SlideRecord | None:
        """The indexed slide with this id, or None."""
        return self.index().slides.get(slide_id)

    def slide(self, slide_id: int) -> Slide | None:
        """The indexed slide with this id, opened once (None: no such slide)."""
        from cbir.slides.open import open_slide

        with self.lock:
            record = self.slide_record(slide_id)
            if record is None:
                return None
            if slide_id not in self._slides:
                info = record.info
                self._slides[slide_id] = open_slide(info.path, info.base_magnification)
            return self._slides[slide_id]

    def close(self) -> None:
        with self.lock:
            for slide in self._slides.values():
                slide.close()
            self._slides = {}
            if self._index is not None:
                self._index.close()
                self._index = None
