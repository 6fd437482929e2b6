"""`cbir serve`: the HTTP API and web page over one bundle.

    POST /search                     multipart image (+ form fields), or a JSON region
    GET  /slides, /info, /healthz
    GET  /slides/{id}/region.png     a rectangle of an indexed slide at a magnification
    GET  /slides/{id}.dzi            Deep Zoom descriptor, and its tiles:
    GET  /slides/{id}_files/{level}/{col}_{row}.jpeg
    GET  /                           the web page (OpenSeadragon viewer)

Requests name slides by their id in the bundle, never by path: nothing outside the
slides the bundle indexed can be read."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from cbir import __version__
from cbir.errors import CbirError, QueryError
from cbir.serve.holder import BundleHolder
from cbir.serve.imagery import DeepZoomCache, dz_tile_jpeg, dzi_xml, region_png
from cbir.serve.schemas import Health, RegionSearch, SearchOptions, SlideView

STATIC = Path(__file__).parent / "static"
#: Uploaded query images: at most this many bytes and pixels.
MAX_UPLOAD_BYTES = 64 << 20
MAX_QUERY_PIXELS = 64_000_000

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


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Image file bytes -> (h, w, 3) uint8 RGB; QueryError naming the upload otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_QUERY_PIXELS:
                raise QueryError(f"{name}: {im.width} x {im.height} px is too large a query")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise QueryError(f"{name}: not a readable image ({exc})") from exc


def _form_options(form: Any) -> SearchOptions:
    """Search options from multipart form fields (strings; `slides` comma-separated)."""
    fields: dict[str, Any] = {}
    for key in SearchOptions.model_fields:
        value = form.get(key)
        if value in (None, ""):
            continue
        if key == "slides":
            value = [v for v in str(value).split(",") if v.strip()]
        fields[key] = value
    unknown = set(form.keys()) - set(SearchOptions.model_fields) - {"image"}
    if unknown:
        raise QueryError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return SearchOptions.model_validate(fields)


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def create_app(
    bundle: str | os.PathLike[str], device: str | None = "auto", ray: str | None = None
) -> FastAPI:
    """The app serving `bundle` (opened now, so a bad bundle fails before serving)."""
    holder = BundleHolder(bundle, device, ray)
    zoom = DeepZoomCache()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        holder.close()

    app = FastAPI(
        title="cbir",
        version=__version__,
        description=f"Content-based image retrieval over the bundle {holder.root}.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(CbirError)
    async def cbir_error(request: Request, exc: CbirError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def slide_or_404(slide_id: int):  # type: ignore[no-untyped-def]
        slide = holder.slide(slide_id)
        if slide is None:
            raise HTTPException(404, f"no slide {slide_id} in this bundle")
        return slide

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> Health:
        index = holder.index()
        return Health(
            status="ok",
            generation=holder.generation,
            recipe=index.recipe.name,
            slides=len(index.slides),
        )

    @app.get("/info")
    def info() -> dict[str, Any]:
        return holder.index().info().model_dump()

    @app.get("/slides")
    def slides() -> list[SlideView]:
        index = holder.index()
        return [
            SlideView(
                slide_id=r.slide_id,
                name=r.info.name,
                width=r.info.width,
                height=r.info.height,
                base_magnification=r.info.base_magnification,
                magnifications=r.magnifications,
                tiles=r.tiles,
                dzi=f"/slides/{r.slide_id}.dzi",
            )
            for r in sorted(index.slides.values(), key=lambda r: r.slide_id)
        ]

    @app.post("/search", openapi_extra=SEARCH_BODY)
    async def search(request: Request) -> Response:
        """A multipart upload (field `image`, options as form fields) or a JSON region."""
        kind = request.headers.get("content-type", "")
        try:
            if kind.startswith("multipart/form-data"):
                form = await request.form()
                upload = form.get("image")
                if upload is None or isinstance(upload, str):
                    raise QueryError("multipart search needs an `image` file field")
                data = await upload.read(MAX_UPLOAD_BYTES + 1)
                if len(data) > MAX_UPLOAD_BYTES:
                    raise QueryError(f"{upload.filename}: larger than {MAX_UPLOAD_BYTES} bytes")
                options = _form_options(form)
                name = Path(upload.filename or "upload").name
                query: Any = decode_upload(data, name)
            elif kind.startswith("application/json"):
                options = RegionSearch.model_validate(json.loads(await request.body()))
                query, name = _region_query(options)
            else:
                raise QueryError("send multipart/form-data (an image) or application/json")
        except ValidationError as exc:
            raise QueryError(_one_line(exc)) from None
        except json.JSONDecodeError as exc:
            raise QueryError(f"body is not JSON ({exc.msg})") from None
        with holder.searching() as index:
            result = index.search(query, **_search_kwargs(index, options))
        result = result.model_copy(update={"query": name})
        return Response(result.model_dump_json(), media_type="application/json")

    def _region_query(r: RegionSearch):  # type: ignore[no-untyped-def]
        from cbir.query import Region

        record = holder.slide_record(r.slide)
        if record is None:
            raise HTTPException(404, f"no slide {r.slide} in this bundle")
        mag = r.magnification
        if mag is None:
            tile = holder.index().recipe.tiling.tile_size
            scale = lambda m: m / record.info.base_magnification  # noqa: E731
            fits = [m for m in record.magnifications if min(r.w, r.h) * scale(m) >= tile]
            if not fits:
                raise QueryError(
                    f"region {r.w} x {r.h} px is smaller than one {tile} px tile at every "
                    "indexed magnification"
                )
            mag = max(fits)
        region = Region(slide=record.info.path, x=r.x, y=r.y, w=r.w, h=r.h, magnification=mag)
        # shown as the slide's name: the server's paths stay on the server
        return region, str(region.model_copy(update={"slide": record.info.name}))

    def _search_kwargs(index: Any, o: SearchOptions) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "k": o.k,
            "scale": o.scale,
            "verify": o.verify,
            "allow_background": o.allow_background,
            "min_similarity": o.min_similarity,
            "expand": o.expand,
        }
        if o.slides is not None:
            unknown = [s for s in o.slides if s not in index.slides]
            if unknown:
                raise QueryError(f"slides: no slide {unknown[0]} in this bundle")
            kwargs["slides"] = [index.slides[s].info.path for s in o.slides]
        return {**kwargs, "exclude_query_slide": o.exclude_query_slide, "vote": o.vote}

    @app.get("/slides/{slide_id:int}/region.png", response_class=Response)
    def region(
        slide_id: int,
        x: int,
        y: int,
        w: int,
        h: int,
        magnification: float,
        max_side: int | None = Query(None, ge=16, description="Cap the longest side (px)."),
    ) -> Response:
        png = region_png(slide_or_404(slide_id), x, y, w, h, magnification, max_side)
        return Response(png, media_type="image/png")

    @app.get("/slides/{slide_id:int}.dzi", response_class=Response)
    def dzi(slide_id: int) -> Response:
        gen = zoom.generator(holder.generation, slide_id, slide_or_404(slide_id))
        return Response(dzi_xml(gen), media_type="application/xml")

    @app.get("/slides/{slide_id:int}_files/{level:int}/{col:int}_{row:int}.jpeg")
    def dz_tile(slide_id: int, level: int, col: int, row: int) -> Response:
        gen = zoom.generator(holder.generation, slide_id, slide_or_404(slide_id))
        try:
            return Response(dz_tile_jpeg(gen, level, col, row), media_type="image/jpeg")
        except QueryError as exc:
            raise HTTPException(404, str(exc)) from None

    return app
