"""Options shared by several commands, spelled once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

IndexArg = Annotated[Path, typer.Argument(help="Index bundle directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
#: The recipe of build-index and evaluate when none is named (no network, no torch).
DEFAULT_RECIPE = "stats-lsh32"
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


def _device(value: str) -> str:
    """--device: auto, cpu, cuda or cuda:N, mps (checked here: a recipe without a network
    would otherwise never look at it)."""
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is None:
        raise typer.BadParameter(f"{value!r}; valid: auto, cpu, cuda, cuda:N, mps")
    return value


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where networks run: auto (CUDA if available), cpu, cuda[:N], mps.",
        callback=_device,
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        exists=True,  # checked before any network code is imported
        dir_okay=False,
        help="Model weights of a learned descriptor (cbir train ...).",
    ),
]

# -- training (the methods' own options come from their config models: cli/train.py) ------
OutWeightsOpt = Annotated[Path, typer.Option("--out", "-o", help="Weights file to write.")]
LabelsOpt = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="CSV path,label.")
]
#: As cbir.nn.train.method.BACKBONE_HELP (not imported: it would import pydantic at start).
BACKBONE_HELP = (
    "a registered backbone (cbir backbones): small, vgg16, vgg19, resnet50, "
    "efficientnet_lite0 (ImageNet, packaged), efficientnet_lite1/_lite2 (ImageNet, "
    "extra pretrained), ViTs (uni, ...), or timm:<model>"
)
BackboneOpt = Annotated[str, typer.Option(help=BACKBONE_HELP)]
SkipErrorsOpt = Annotated[
    bool,
    typer.Option(
        "--skip-errors",
        help="Leave out slides that cannot be read (one line each on stderr, `skipped` in "
        "--json) and index the rest; exit code 3 when any was. A slide without a tissue "
        "tile is always left out, with a warning.",
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="auto|ADDRESS",
        help="Describe the slides on a Ray cluster (cbir's `ray` extra): auto joins RAY_ADDRESS "
        "or starts one on this machine; or a cluster address. Slide files (and weights) "
        "must be readable at the same paths on every node.",
    ),
]
