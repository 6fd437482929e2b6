"""`cbir serve`: the HTTP API and web page over one bundle (FastAPI + uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import DeviceOpt, IndexArg


@cli_errors
def serve_cmd(
    index: IndexArg,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    device: DeviceOpt = "auto",
    ray: Annotated[
        str | None,
        typer.Option(
            help="Search the segments on actors of this Ray cluster (auto: join or start one).",
        ),
    ] = None,
) -> None:
    """Serve a bundle: search by image or slide region, look at the hits in a slide viewer
    (web page at /, API documentation at /docs). Needs cbir's `serve` extra."""
    try:
        import uvicorn

        from cbir.serve.app import create_app
    except ImportError as exc:
        from cbir.errors import CbirError

        raise CbirError(f"cbir serve needs its extra: pip install 'cbir[serve]' ({exc})") from None
    app = create_app(index, device, ray)
    typer.echo(f"serving {index} at http://{host}:{port}/ (API documentation: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
