"""Bounds on what one client can make the server hold: request bodies (counted while they
stream in), the time to send a request's headers, and uvicorn's connection settings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from cbir.serve.bodies import BodyTooLarge

#: Any request body: at most this many bytes (a 64 MiB image plus the multipart framing).
MAX_BODY_BYTES = (64 << 20) + (1 << 20)
#: A client has this long to send a request's line and headers (seconds).
HEADER_TIMEOUT_S = 10.0
#: uvicorn settings (see `uvicorn_settings`).
LIMIT_CONCURRENCY = 128
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 16 << 10
BACKLOG = 128


class BodyLimit:
    """Pure ASGI middleware: 413 (one-line JSON `detail`) for a body whose Content-Length,
    or whose bytes as they arrive, pass `limit`: `receive` raises BodyTooLarge (the app
    answers 413) and nothing past the limit is read."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number")
                return
            if too_big:
                await _reply(send, 413, f"request body larger than {self.limit} bytes")
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"request body larger than {self.limit} bytes")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:  # raised in `counted`, if the app has no handler for it
            if not started:
                await _reply(send, 413, f"request body larger than {self.limit} bytes")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def head_bytes(event: h11.Request) -> int:
    """About the bytes of a request's line and headers as sent."""
    line = len(event.method) + len(event.target) + 11
    return line + sum(len(k) + len(v) + 4 for k, v in event.headers.raw_items())


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a header-read timeout and a size bound on the request
    line and headers. A connection that has not sent a whole request line and headers
    within HEADER_TIMEOUT_S of connecting (or of its previous response) is closed: uvicorn
    itself only times out idle keep-alive connections, and only until their first byte, so
    a client sending one header byte at a time (slowloris) would hold a connection for
    ever. A request whose line and headers pass MAX_HEADER_BYTES gets uvicorn's 400 for a
    malformed request: h11's own bound holds only while they are incomplete, so 100 KB of
    headers sent in one write were accepted."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()
        next_event = self.conn.next_event

        def bounded() -> Any:
            event = next_event()
            if isinstance(event, h11.Request) and head_bytes(event) > MAX_HEADER_BYTES:
                raise h11.RemoteProtocolError("request line and headers too large")
            return event

        self.conn.next_event = bounded  # type: ignore[method-assign]

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._header_timeout)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:
            self._disarm()  # a request's headers are in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_settings() -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`: at most LIMIT_CONCURRENCY connections and
    tasks (503 beyond), idle keep-alive connections closed after KEEP_ALIVE_S, request
    line + headers at most MAX_HEADER_BYTES, a listen backlog of BACKLOG, and the
    header-read timeout of HeaderTimeoutH11."""
    return {
        "http": HeaderTimeoutH11,
        "limit_concurrency": LIMIT_CONCURRENCY,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "backlog": BACKLOG,
        "timeout_graceful_shutdown": 10,
    }
