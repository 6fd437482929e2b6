"""`cbir serve`: the HTTP API and web page over one bundle.

    POST /search                     multipart image (+ form fields), or a JSON region
    POST /search/slide               an indexed slide as the query: similar slides
    GET  /slides, /info, /healthz
    GET  /slides/{id}/region.png     a rectangle of an indexed slide at a magnification
    GET  /slides/{id}.dzi            Deep Zoom descriptor, and its tiles:
    GET  /slides/{id}_files/{level}/{col}_{row}.jpeg
    GET  /                           the web page (OpenSeadragon viewer)

Requests name slides by their id in the bundle, never by path: nothing outside the
slides the bundle indexed can be read. Every request leases the live generation (see
holder.py); decoding, searching and pixel reads run in bounded worker threads, never in
the event loop."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.requests import ClientDisconnect

from cbir import __version__
from cbir.errors import CbirError, QueryError
from cbir.serve.bodies import (
    MAX_JSON_BYTES,
    BodyTooLarge,
    api_words,
    decode_upload,
    parse_json,
    parse_region,
    read_capped,
    read_upload,
)
from cbir.serve.cached_tiles import CachedTiles
from cbir.serve.config import ServeConfig
from cbir.serve.docs import add_offline_docs
from cbir.serve.export_zip import export_zip
from cbir.serve.generation import SlideNotFound
from cbir.serve.holder import BundleHolder
from cbir.serve.imagery import TileCache, dz_tile_jpeg, dzi_xml, region_png
from cbir.serve.limits import BodyLimit
from cbir.serve.queries import region_query, search_kwargs, slide_search_kwargs
from cbir.serve.schemas import Health, RegionSearch, SearchOptions, SlideSearch, SlideView
from cbir.serve.security import AccessLog, HostCheck, TokenGate
from cbir.serve.workers import Workers

STATIC = Path(__file__).parent / "static"


class IdConvertor(IntegerConvertor):
    """Path integers (slide ids, Deep Zoom levels, columns, rows) of at most 18 digits: a
    longer one matches no route (404), where Starlette's `int` would raise on over 4300
    digits (a 500)."""

    regex = "[0-9]{1,18}"


register_url_convertor("id", IdConvertor())
T = TypeVar("T")

SEARCH_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        **SearchOptions.model_json_schema()["properties"],
                    },
                }
            },
            "application/json": {"schema": RegionSearch.model_json_schema()},
        }
    }
}


SLIDE_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SlideSearch.model_json_schema()}},
    }
}


#: `cbir serve --processes N` passes the app's arguments to its worker processes here.
SPEC_ENV = "CBIR_SERVE_SPEC"


def create_app(
    bundle: str | os.PathLike[str],
    device: str | None = "auto",
    ray: str | None = None,
    config: ServeConfig | None = None,
) -> FastAPI:
    """The app serving `bundle` (opened now, so a bad bundle fails before serving)."""
    config = config or ServeConfig()
    holder = BundleHolder(bundle, device, ray)
    workers = Workers(config.pixel_threads, config.search_threads)
    tiles = TileCache(config.tile_cache_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        holder.close()

    app = FastAPI(
        title="cbir",
        version=__version__,
        description=f"Content-based image retrieval over the bundle {holder.root}.",
        lifespan=lifespan,
        docs_url=None,  # add_offline_docs: Swagger UI from local files, not a CDN
        redoc_url=None,
    )
    app.state.holder = holder
    app.state.workers = workers
    add_offline_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # outermost last: access log -> Host check -> CORS -> token -> body limit -> cached
    # tiles -> routes
    app.add_middleware(CachedTiles, holder=holder, tiles=tiles, workers=workers)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    if config.token:
        app.add_middleware(TokenGate, token=config.token)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if config.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=config.allowed_hosts)
    if config.log_requests:
        app.add_middleware(AccessLog)

    @app.exception_handler(SlideNotFound)
    async def not_found(request: Request, exc: SlideNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413, headers={"connection": "close"})

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        """The client left before its body was read: nobody to answer, nothing broken.
        Logged as 499 (nginx's "client closed request"), not a 500 with a traceback."""
        return Response(status_code=499)

    @app.exception_handler(CbirError)  # in the API's words: an option, not a CLI flag
    async def cbir_error(request: Request, exc: CbirError) -> JSONResponse:
        detail = api_words(str(exc).splitlines()[0][:1000])
        return JSONResponse({"detail": detail}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else "request"
        msg = errors[0]["msg"] if errors else "invalid"
        return JSONResponse({"detail": f"{where}: {msg}"[:500]}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # what a browser asks for before reading the page
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    def health() -> Health:
        with holder.lease() as gen:
            return Health(
                status="ok",
                generation=gen.number,
                recipe=gen.index.recipe.name,
                slides=len(gen.index.slides),
            )

    @app.get("/healthz")
    async def healthz() -> Health:
        return await workers.pixels(health)

    def info_dict() -> dict[str, Any]:
        with holder.lease() as gen:
            return gen.index.info().model_dump()

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return await workers.pixels(info_dict)

    def slide_views() -> list[SlideView]:
        with holder.lease() as gen:
            return [
                SlideView.model_validate({**r.flat(), "dzi": f"/slides/{r.slide_id}.dzi"})
                for r in sorted(gen.index.slides.values(), key=lambda r: r.slide_id)
            ]

    @app.get("/slides")
    async def slides() -> list[SlideView]:
        return await workers.pixels(slide_views)

    @app.post("/search", openapi_extra=SEARCH_BODY)
    async def search(request: Request) -> Response:
        """A multipart upload (field `image`, options as form fields) or a JSON region.
        Bodies are read here (bounded); decoding and searching run in `workers.search`."""
        workers.search_started()
        try:
            return await _search(request)
        finally:
            workers.search_ended()

    @app.post("/export", openapi_extra=SEARCH_BODY, response_class=Response)
    async def export(request: Request) -> Response:
        """The same search; answered with the files of `cbir search --export` as a zip."""
        workers.search_started()
        try:
            return await _search(request, as_zip=True)
        finally:
            workers.search_ended()

    async def _search(request: Request, as_zip: bool = False) -> Response:
        """A search, from reading its body to its JSON answer (or its export, zipped)."""
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            data, name, options = await read_upload(request)
            region: RegionSearch | None = None
        elif kind.startswith("application/json"):
            region = parse_region(await read_capped(request, MAX_JSON_BYTES))
            data, name, options = b"", "", region
        else:
            raise QueryError("send multipart/form-data (an image) or application/json")

        def run() -> str | bytes:
            with holder.lease() as gen:
                if region is not None:
                    query, shown = region_query(gen, region)
                else:
                    query, shown = decode_upload(data, name), name
                kwargs = search_kwargs(gen, options)
                with gen.search_lock:
                    try:
                        result = gen.index.search(query, **kwargs)
                    except CbirError as exc:  # an upload named as sent, not "<array>"; a
                        # region by its slide's name, as its answer: not the server's path
                        said = str(query) if region is not None else "<array>"
                        raise type(exc)(str(exc).replace(said, shown, 1)) from None
                result = result.model_copy(update={"query": shown})
                if as_zip:
                    return export_zip(gen.index, result, query)
            return result.model_dump_json()

        if as_zip:
            headers = {"content-disposition": 'attachment; filename="cbir-export.zip"'}
            body = await workers.search(run)
            return Response(body, media_type="application/zip", headers=headers)
        return Response(await workers.search(run), media_type="application/json")

    @app.post("/search/slide", openapi_extra=SLIDE_SEARCH_BODY)
    async def search_slide(request: Request) -> Response:
        """An indexed slide as the query: the slides most like it, each with its tile
        pairs (query tile -> nearest tile), from the slide's stored mosaic. The JSON body
        is read and checked as /search's (at most MAX_JSON_BYTES, strict JSON, 400)."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise QueryError("send application/json (a SlideSearch object)")
        body = parse_json(await read_capped(request, MAX_JSON_BYTES), SlideSearch)

        def run() -> str:
            with holder.lease() as gen:
                kwargs = slide_search_kwargs(gen, body)
                with gen.search_lock:
                    return gen.index.search_slide(**kwargs).model_dump_json()

        workers.search_started()
        try:
            return Response(await workers.search(run), media_type="application/json")
        finally:
            workers.search_ended()

    @app.get("/slides/{slide_id:id}/region.png", response_class=Response)
    async def region(
        slide_id: int,
        x: int,
        y: int,
        w: int,
        h: int,
        magnification: float,
        max_side: int | None = Query(None, ge=16, description="Cap the longest side (px)."),
    ) -> Response:
        def read() -> bytes:
            with holder.lease() as gen, gen.slide(slide_id) as entry:
                return region_png(entry.slide, x, y, w, h, magnification, max_side)

        return Response(await workers.pixels(read), media_type="image/png")

    @app.get("/slides/{slide_id:id}.dzi", response_class=Response)
    async def dzi(slide_id: int) -> Response:
        def read() -> str:
            with holder.lease() as gen, gen.slide(slide_id) as entry:
                return dzi_xml(entry.deep_zoom())

        return Response(await workers.pixels(read), media_type="application/xml")

    @app.get("/slides/{slide_id:id}_files/{level:id}/{col:id}_{row:id}.jpeg")
    async def dz_tile(slide_id: int, level: int, col: int, row: int) -> Response:
        """A Deep Zoom tile of an indexed slide (JPEG)."""
        # Cached tiles were answered by CachedTiles (after any search in flight); this
        # one is read and encoded in a worker thread.

        def read() -> bytes:
            with holder.lease() as gen, gen.slide(slide_id) as entry:
                key = (gen.index.slides[slide_id].checksum, level, col, row)
                tile = tiles.get(key)
                if tile is None:
                    tile = dz_tile_jpeg(entry.deep_zoom(), level, col, row)
                    tiles.put(key, tile)
                return tile

        try:
            return Response(await workers.pixels(read, first=False), media_type="image/jpeg")
        except QueryError as exc:
            raise HTTPException(404, str(exc)) from None

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of `cbir serve --processes N` (uvicorn's factory):
    its arguments come from the SPEC_ENV environment variable the CLI set."""
    import json

    from cbir.serve.security import setup_access_log

    spec = json.loads(os.environ[SPEC_ENV])
    config = ServeConfig.model_validate(spec["config"])
    if config.log_requests:
        setup_access_log()
    return create_app(spec["bundle"], spec["device"], spec["ray"], config)
