"""Who may talk to the server: an access token, the Host names it answers to (against
DNS rebinding), CORS only when asked for, and a request log that never holds a body, a
query string or a token."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbir.errors import CbirError

#: The cookie `/?token=T` sets, which the web page's own requests then carry.
TOKEN_COOKIE = "cbir_token"
TOKEN_ENV = "CBIR_TOKEN"
#: Paths served without a token: the page's static assets (OpenSeadragon, CSS, JS).
PUBLIC_PREFIXES = ("/static/",)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
access_log = logging.getLogger("cbir.serve.access")


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """CbirError (one line) when `host` is not loopback and there is no token."""
    if not is_loopback(host) and not token:
        raise CbirError(
            f"--host {host} exposes the server beyond this machine: give an access token "
            f"(--token T or {TOKEN_ENV}=T)"
        )


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """Host header names the server answers to: loopback names, the bound host (unless it
    is a wildcard address) and `extra` (--allowed-host)."""
    names = [*LOOPBACK_NAMES, *extra]
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    return list(dict.fromkeys(names))


class TokenGate:
    """Pure ASGI middleware: a request needs the token as `Authorization: Bearer T` or in
    the `cbir_token` cookie; `GET /?token=T` sets that cookie (HttpOnly, SameSite=Strict)
    and redirects to `/`, so the web page works after opening that address once. Paths
    under PUBLIC_PREFIXES and CORS preflights (OPTIONS) pass. Others get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if method == "OPTIONS" or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed Cookie header is no token
            cookie = SimpleCookie()
        jar = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        if self._ok(bearer) or self._ok(jar):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/" and self._ok((query.get("token") or [None])[0]):
            set_cookie = f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"
            await _send(send, 303, b"", [(b"location", b"/"), (b"set-cookie", set_cookie.encode())])
            return
        detail = "a token is needed: Authorization: Bearer T, or open /?token=T once"
        body = json.dumps({"detail": detail}).encode()
        await _send(send, 401, body, [(b"www-authenticate", b"Bearer")])


class HostCheck:
    """Pure ASGI middleware against DNS rebinding: a request whose Host header (port
    left out) is not one of `allowed` gets 400 with a one-line JSON `detail`."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    def _host(self, scope: Scope) -> str:
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
        if raw.startswith("["):  # [::1]:8000
            return raw[1 : raw.find("]")] if "]" in raw else raw
        return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        host = self._host(scope)
        if host and host in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = ascii(host[:100])[1:-1] or "(none)"
        detail = f"Host {shown} is not a name this server answers to (--allowed-host)"
        await _send(send, 400, json.dumps({"detail": detail}).encode(), [])


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """Pure ASGI middleware: one INFO line per request on `cbir.serve.access`: client
    address, method, path (never the query string, which may hold a token), status,
    milliseconds. Bodies (query images) are never read here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 0

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                "%s %s %s %d %.1f ms",
                client[0],
                scope["method"],
                ascii(scope["path"][:300])[1:-1],  # no control characters
                status or 500,
                (time.perf_counter() - t0) * 1000,
            )


def setup_access_log() -> None:
    """Send `cbir.serve.access` lines to stderr with a timestamp (once per process)."""
    access = logging.getLogger("cbir.serve.access")
    if access.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
