"""The server's bundle: opened once and kept warm, reopened when a writer (`cbir add`,
`remove`, `label`, `compact`, `build-index --overwrite`) publishes a new generation.
Requests lease the current generation; an old one closes when its last lease ends."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cbir.serve.generation import Generation
from cbir.storage.manifest import MANIFEST, read_manifest


class BundleHolder:
    """The live `Generation` of one bundle. `lease()` checks the manifest (one stat per
    call), opens a newly published generation for new requests and retires the old one,
    which stays open until the requests holding it end."""

    def __init__(
        self, root: str | os.PathLike[str], device: str | None = "auto", ray: str | None = None
    ) -> None:
        self.root = Path(root)
        self.device = device
        self.ray = ray  # shard the segments' indexes on this Ray cluster
        self._lock = threading.Lock()  # guards _current and reopening
        self._current: Generation | None = None
        self._current = self._open(self._manifest_stamp())

    def _manifest_stamp(self) -> tuple[int, int]:
        st = (self.root / MANIFEST).stat()
        return st.st_mtime_ns, st.st_size

    def _open(self, stamp: tuple[int, int]) -> Generation:
        from cbir.api import open_index

        index = open_index(self.root, device=self.device, ray=self.ray)
        try:  # a server searches: its network is built now, not in the first request
            index.bundle.pipeline.descriptor  # noqa: B018
        except BaseException:
            index.close()
            raise
        return Generation(index, stamp)

    def _refresh(self) -> Generation:
        """The current generation, after swapping in a newly published one (under _lock)."""
        current = self._current
        if current is None:
            raise RuntimeError("the bundle holder is closed")
        try:
            stamp = self._manifest_stamp()
        except OSError:  # a writer is replacing the manifest: keep what we have
            return current
        if stamp == current.stamp:
            return current
        manifest = read_manifest(self.root)
        if (manifest.generation, manifest.created) == (current.number, current.created):
            current.stamp = stamp
            return current
        fresh = self._open(stamp)
        self._current = fresh
        current.retire()  # closes once its last lease ends
        return fresh

    def peek(self) -> Generation | None:
        """The live generation when the manifest has not changed since it was opened (one
        stat, no lock, no reopening: for the event loop); None otherwise, or when closed.
        Only for what needs no lease (reading records and caches, never slide files)."""
        current = self._current
        try:
            stamp = self._manifest_stamp()
        except OSError:
            return None
        return current if current is not None and stamp == current.stamp else None

    @contextmanager
    def lease(self) -> Iterator[Generation]:
        """The live generation, kept open for the block."""
        with self._lock:
            gen = self._refresh()
            gen.acquire()
        try:
            yield gen
        finally:
            gen.release()

    @property
    def generation(self) -> int:
        """The number of the generation new requests get (without checking the manifest)."""
        current = self._current
        return current.number if current is not None else 0

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.retire()
