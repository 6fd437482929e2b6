"""`cbir serve`: the HTTP API and web page over one bundle (FastAPI + uvicorn)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import DeviceOpt, IndexArg


@cli_errors
def serve_cmd(
    index: IndexArg,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (not loopback: --token is required).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    device: DeviceOpt = "auto",
    ray: Annotated[
        str | None,
        typer.Option(
            help="Search the segments on actors of this Ray cluster (auto: join or start one).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token every request must carry (Authorization: Bearer T, or open "
            "/?token=T once in a browser). Default: the CBIR_TOKEN environment variable.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name clients use to reach the server (repeatable; loopback names "
            "and --host are always allowed).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow cross-origin requests from this origin (repeatable)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=256, help="Threads reading tiles and regions.")
    ] = 8,
    log_requests: Annotated[
        bool, typer.Option(help="Log one line per request (never bodies or query strings).")
    ] = True,
) -> None:
    """Serve a bundle: search by image or slide region, look at the hits in a slide viewer
    (web page at /, API documentation at /docs). Needs cbir's `serve` extra."""
    try:
        import uvicorn

        from cbir.serve.app import create_app
        from cbir.serve.config import ServeConfig
        from cbir.serve.limits import uvicorn_settings
    except ImportError as exc:
        from cbir.errors import CbirError

        raise CbirError(f"cbir serve needs its extra: pip install 'cbir[serve]' ({exc})") from None
    token = token or os.environ.get("CBIR_TOKEN") or None
    config = ServeConfig.for_host(host, token, allowed_host, cors_origin).model_copy(
        update={"pixel_threads": workers, "log_requests": log_requests}
    )
    if host in ("0.0.0.0", "::") and not allowed_host:
        typer.echo(
            f"note: --host {host} without --allowed-host answers only Host: localhost / "
            "127.0.0.1; add the names clients use",
            err=True,
        )
    app = create_app(index, device, ray, config)
    if log_requests:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access = logging.getLogger("cbir.serve.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    auth = " (token required)" if token else ""
    typer.echo(f"serving {index} at http://{host}:{port}/{auth} (API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", **uvicorn_settings())
