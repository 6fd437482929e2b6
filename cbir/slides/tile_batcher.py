"""Large batches for a GPU from many reader threads.

Indexing reads a slide's super-blocks on worker threads, and each block yields a few to
a few hundred tiles. On a CPU each worker describes its own tiles (the network keeps the
cores busy at any batch size). A GPU wants batches of hundreds of tiles while the CPU
decodes the next blocks: readers hand their tiles to a `TileBatcher` and wait; one
inference thread runs whatever has gathered, up to `batch` tiles, at once, and hands
each reader its rows back. Decoding (many threads, GIL released) overlaps inference.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

#: Name of the thread that runs the network on gathered batches (profilers look for it).
BATCHER_THREAD = "cbir-gpu-batcher"
#: Tiles a GPU batch gathers at most.
GPU_BATCH = 512
#: Reader threads when tiles are gathered for a GPU (decoding is then the bottleneck).
GPU_READERS = min(16, os.cpu_count() or 1)
#: Python's thread switch interval while tiles are gathered for a GPU, s (Python's
#: default is 0.005). The inference thread gives up the GIL at every CUDA call and waits
#: up to this long for a reader to hand it back; None leaves Python's setting.
GPU_SWITCH_INTERVAL_S: float | None = 2e-4

_interval_lock = threading.Lock()
_interval_users = 0  # open batchers holding a lowered switch interval
_interval_saved = 0.005  # Python's interval before the first of them


def _lower_switch_interval(seconds: float) -> None:
    """Set Python's switch interval for an open batcher (the first one saves the setting
    the last one restores: batchers may overlap)."""
    global _interval_users, _interval_saved
    with _interval_lock:
        if _interval_users == 0:
            _interval_saved = sys.getswitchinterval()
            sys.setswitchinterval(seconds)
        _interval_users += 1


def _restore_switch_interval() -> None:
    global _interval_users
    with _interval_lock:
        _interval_users -= 1
        if _interval_users == 0:
            sys.setswitchinterval(_interval_saved)


class TileBatcher:
    """`describe(tiles)` from any thread -> fn's rows for those tiles; fn runs on one
    thread over the concatenated tiles of every waiting caller (at most `batch`, but
    never splitting a caller's tiles). Use as a context manager (it owns the thread).
    `switch_interval`: Python's thread switch interval (s) while it is open (restored at
    close), None to leave it."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        batch: int = GPU_BATCH,
        wait_s: float = 0.002,
        switch_interval: float | None = None,
    ) -> None:
        self.fn = fn
        self.batch = batch
        self.wait_s = wait_s  # how long a partial batch waits for more tiles
        self._pending: list[tuple[np.ndarray, Future[np.ndarray]]] = []
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run, their tiles, and seconds in fn (for tests and reports)
        self.tiles = 0
        self.fn_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=BATCHER_THREAD, daemon=True)
        self._lowered = switch_interval is not None
        if switch_interval is not None:
            _lower_switch_interval(switch_interval)
        self._thread.start()

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> fn's (n, d) rows for them (blocks until computed)."""
        fut: Future[np.ndarray] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("TileBatcher is closed")
            self._pending.append((tiles, fut))
            self._cv.notify_all()
        return fut.result()

    def _take(self) -> list[tuple[np.ndarray, Future[np.ndarray]]] | None:
        """The next callers to serve together (None: closed and drained)."""
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.wait_s  # let other readers add tiles
            while sum(len(t) for t, _ in self._pending) < self.batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            taken, size = [], 0
            while self._pending and (not taken or size + len(self._pending[0][0]) <= self.batch):
                item = self._pending.pop(0)
                taken.append(item)
                size += len(item[0])
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            try:
                batch = np.concatenate([t for t, _ in taken])
                t0 = time.perf_counter()
                rows = self.fn(batch)
                self.fn_seconds += time.perf_counter() - t0
                self.batches += 1
                self.tiles += len(batch)
            except BaseException as exc:  # every waiting reader gets the error
                for _, fut in taken:
                    fut.set_exception(exc)
                continue
            start = 0
            for tiles, fut in taken:
                fut.set_result(rows[start : start + len(tiles)])
                start += len(tiles)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        try:
            self._thread.join()
        finally:
            if self._lowered:
                self._lowered = False
                _restore_switch_interval()

    def __enter__(self) -> TileBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gathers_for_gpu(pipeline: object) -> bool:
    """Whether a pipeline's descriptor runs its network on CUDA (then tiles are
    gathered into GPU batches)."""
    device = getattr(getattr(pipeline, "descriptor", None), "device", None)
    return getattr(device, "type", None) == "cuda"


def gathering(pipeline: object, batch: int = GPU_BATCH) -> TileBatcher:
    """A batcher over `pipeline.describe` whose network takes the gathered tiles in one
    forward pass: the descriptor's own batch size is raised to `batch` (it would split
    them again) and Python's switch interval lowered to GPU_SWITCH_INTERVAL_S."""
    descriptor = getattr(pipeline, "descriptor", None)
    if isinstance(getattr(descriptor, "batch_size", None), int):
        descriptor.batch_size = max(descriptor.batch_size, batch)  # type: ignore[union-attr]
    return TileBatcher(
        pipeline.describe,  # type: ignore[attr-defined]
        batch,
        switch_interval=GPU_SWITCH_INTERVAL_S,
    )
