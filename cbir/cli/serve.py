"""`cbir serve`: the HTTP API and web page over one bundle (FastAPI + uvicorn)."""

from __future__ import annotations

import json
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
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes sharing the port (each holds the bundle open: memory "
            "grows with them; about one per core serves more clients at once).",
        ),
    ] = 1,
) -> None:
    """Serve a bundle: search by image or slide region, look at the hits in a slide viewer
    (web page at /, API documentation at /docs). Needs cbir's `serve` extra."""
    try:
        import uvicorn

        from cbir.serve.app import SPEC_ENV, create_app
        from cbir.serve.config import ServeConfig
        from cbir.serve.limits import uvicorn_settings
        from cbir.serve.security import setup_access_log
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
    auth = " (token required)" if token else ""
    if processes == 1:
        app = create_app(index, device, ray, config)
        if log_requests:
            setup_access_log()
        typer.echo(f"serving {index} at http://{host}:{port}/{auth} (API docs: /docs)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", **uvicorn_settings())
        return
    from cbir.api import open_index
    from cbir.errors import CbirError

    if ray is not None:
        raise CbirError("--ray places one set of index shards: serve it with --processes 1")
    open_index(index, device=device).close()  # a bad bundle fails here, in one line
    spec = {"bundle": str(index), "device": device, "ray": ray, "config": config.model_dump()}
    os.environ[SPEC_ENV] = json.dumps(spec)
    typer.echo(
        f"serving {index} at http://{host}:{port}/{auth} with {processes} processes "
        "(API docs: /docs)",
        err=True,
    )
    uvicorn.run(
        "cbir.serve.app:app_from_environment",
        factory=True,
        workers=processes,
        host=host,
        port=port,
        log_level="warning",
        **uvicorn_settings(),
    )
