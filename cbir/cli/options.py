"""Options shared by several commands, spelled once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

IndexArg = Annotated[Path, typer.Argument(help="Index bundle directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="Recipe name or .toml path.")]
BaseMagOpt = Annotated[
    float | None,
    typer.Option(
        "--base-magnification",
        help="Base magnification for slides that state "
        "neither objective power nor mpp (default 20).",
    ),
]
MinTissueOpt = Annotated[
    float | None,
    typer.Option(
        "--min-tissue",
        min=0.0,
        max=1.0,
        help="Minimum tissue fraction of an indexed tile (default: the recipe's).",
    ),
]
KOpt = Annotated[int | None, typer.Option("-k", "--k", min=1, help="Number of hits.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="Where networks run: auto (CUDA if available), cpu, cuda.")
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Model weights of a learned descriptor (cbir train ...)."),
]
