"""Deep Zoom tiles already in the tile cache, answered before routing.

A viewer asks for tens of tiles a second and most of them are cache hits: bytes to send.
Through FastAPI's routing, parameter validation and its exception middlewares such an
answer cost the event loop about as much Python as the rest of the request, and the
event loop shares one interpreter lock with the searches. This middleware sits inside
the security middlewares (Host check, token, CORS, body limit) and answers a cache hit of
the live generation itself; a miss goes on to the route, which reads the tile in a
worker thread."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from cbir.serve.holder import BundleHolder
from cbir.serve.imagery import TileCache
from cbir.serve.workers import Workers

#: The tile route's path (app.py: /slides/{slide_id:id}_files/{level:id}/{col:id}_{row:id}.jpeg,
#: integers of at most 18 digits).
TILE_PATH = re.compile(
    r"/slides/([0-9]{1,18})_files/([0-9]{1,18})/([0-9]{1,18})_([0-9]{1,18})\.jpeg"
)


class CachedTiles:
    """Pure ASGI middleware: GET of a Deep Zoom tile whose JPEG `tiles` holds for the live
    generation's slide -> 200 image/jpeg, after any search in flight
    (`Workers.searches_first`); anything else -> the app."""

    def __init__(
        self, app: ASGIApp, holder: BundleHolder, tiles: TileCache, workers: Workers
    ) -> None:
        self.app = app
        self.holder = holder
        self.tiles = tiles
        self.workers = workers

    def cached(self, match: re.Match[str]) -> bytes | None:
        """The cached JPEG bytes of the tile a TILE_PATH `match` names, or None (no live
        generation without reopening, an unknown slide, or not cached)."""
        slide_id, level, col, row = (int(g) for g in match.groups())
        gen = self.holder.peek()
        record = gen.index.slides.get(slide_id) if gen is not None else None
        if record is None:
            return None
        return self.tiles.get((record.checksum, level, col, row))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = TILE_PATH.fullmatch(scope["path"])
            if match is not None:
                await self.workers.searches_first()
                tile = self.cached(match)
                if tile is not None:
                    headers = [
                        (b"content-length", str(len(tile)).encode()),
                        (b"content-type", b"image/jpeg"),
                    ]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": tile})
                    return
        await self.app(scope, receive, send)
