"""`/docs` that works offline: FastAPI's Swagger UI page, its scripts and styles served
from the files the `fastapi-offline` package ships (Swagger UI 5, which reads FastAPI's
OpenAPI 3.1; MIT) instead of a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the Swagger UI files are served (under /static/: no token needed for them).
ASSETS = "/static/swagger"


def add_offline_docs(app: FastAPI) -> None:
    """Serve `/docs` from local files. Mount before `/static`, which would shadow
    ASSETS. Call on an app made with `docs_url=None, redoc_url=None`."""
    import fastapi_offline  # only its files are used

    files = Path(fastapi_offline.__file__).parent / "static"
    app.mount(ASSETS, StaticFiles(directory=files), "swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
