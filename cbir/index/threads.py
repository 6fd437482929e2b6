"""OpenMP threads for Faiss searches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss

#: Up to this many queries search on one thread: splitting one query's work across
#: OpenMP threads saves microseconds when idle and costs tens of ms when a core is busy.
SMALL_BATCH = 16


@contextlib.contextmanager
def threads_for(nq: int) -> Iterator[None]:
    """Run the enclosed Faiss search on one thread when nq <= SMALL_BATCH."""
    if nq > SMALL_BATCH:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)
