"""Where a server's requests run: searches on a few threads, tiles and regions on a
bounded pool of others, none in the event loop.

A server process runs Python on one core at a time (the GIL): a search is the request a
user waits on, a Deep Zoom tile one of many. So while a search is in flight, tile and
region reads wait (on an event, no CPU) up to SEARCH_FIRST_S before they start. (Running
the pixel threads at a lower OS priority was tried: 8 clients, three 30 s runs, search
p50 2.28-2.56x one client's against 1.86-2.53x without; not kept.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

#: While a search is in flight, tile and region reads wait up to this long (seconds)
#: before they start (tools/bench_serve.py, 8 clients: 20 ms with polling gave tile p99
#: 45 ms, 40 ms on an event 40-45 ms with searches faster).
SEARCH_FIRST_S = 0.04


class Workers:
    """`pixels` (tiles, regions, status pages: at most `pixels` at once) and `search`
    (decode + search, at most `search` at once; an Index searches one query at a time).
    `searching` counts searches in flight (SEARCH_FIRST_S)."""

    def __init__(self, pixels: int, search: int) -> None:
        self.sizes = (pixels, search)
        self.searching = 0
        self._idle: anyio.Event | None = None  # set when the last search in flight ends
        self._limiters: tuple[anyio.CapacityLimiter, anyio.CapacityLimiter] | None = None

    def _get(self) -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]:
        if self._limiters is None:  # made in the event loop that uses them
            self._limiters = (
                anyio.CapacityLimiter(self.sizes[0]),
                anyio.CapacityLimiter(self.sizes[1]),
            )
        return self._limiters

    async def searches_first(self) -> None:
        """Wait (in the event loop, on an event: no CPU) while a search is in flight, at
        most SEARCH_FIRST_S."""
        if self.searching and self._idle is not None:
            with anyio.move_on_after(SEARCH_FIRST_S):
                await self._idle.wait()

    def search_started(self) -> None:
        """A search request began (called in the event loop, so no lock is needed)."""
        if self.searching == 0:
            self._idle = anyio.Event()
        self.searching += 1

    def search_ended(self) -> None:
        """A search request ended; the last one wakes the waiting tile reads."""
        self.searching -= 1
        if self.searching == 0 and self._idle is not None:
            self._idle.set()

    async def pixels(self, fn: Callable[[], T], first: bool = True) -> T:
        if first:
            await self.searches_first()
        return await anyio.to_thread.run_sync(fn, limiter=self._get()[0])

    async def search(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._get()[1])
