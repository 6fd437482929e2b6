"""A `cbir train` method, declared by its module as `METHOD`: its config model, what it
trains on, how it runs and its one-line summary. Every field of the config model with a
description is a command-line option (cli/train.py): the option's name, default, bounds
and help are the field's, so the CLI and the Python API validate alike. The option types
shared by several methods are spelled once here. Nothing here imports torch: a method
module imports it inside its training function, so `cbir --help` stays light."""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from cbir.nn.verdict import Verdict
from cbir.progress import Progress

#: What a method trains on: labelled tiles, any tiles (labels only stratify the split),
#: labelled tiles or images, or slides.
Inputs = Literal["labelled-tiles", "tiles", "images", "slides"]

C = TypeVar("C", bound="TrainConfig")
R = TypeVar("R", bound="TrainReport")

#: Modules of this package that are not methods.
HELPERS = frozenset({"finetune", "loop", "method", "scale_pairs", "setup"})

BACKBONE_HELP = (
    "a registered backbone (cbir backbones): small, vgg16, vgg19, resnet50, "
    "efficientnet_lite0 (ImageNet, packaged), efficientnet_lite1/_lite2 (ImageNet, "
    "extra pretrained), ViTs (uni, ...), or timm:<model>"
)
#: json_schema_extra of a field given as a local file on the command line (checked to
#: exist before any network code is imported).
A_FILE = {"path": "file"}
A_FOLDER = {"path": "folder"}

Holdout = Annotated[
    float, Field(ge=0.0, le=0.9, description="Fraction of each class held out of training.")
]
Seed = Annotated[
    int,
    Field(ge=0, le=2**32 - 1, description="Random seed of the split, the init and the batches."),
]
Epochs = Annotated[int, Field(ge=1, description="Passes over the training data.")]
BatchSize = Annotated[int, Field(ge=1, description="Tiles a step.")]
LearningRate = Annotated[float, Field(ge=0.0, description="Learning rate.")]
Backbone = Annotated[str, Field(description=BACKBONE_HELP)]
BackboneWeights = Annotated[
    str | None,
    Field(
        description="checkpoint of the backbone in its layout (cbir backbones), read "
        "locally; without it: the packaged weights (efficientnet_lite0) or a seeded random "
        "init",
        json_schema_extra=A_FILE,
    ),
]
BaseRecipe = Annotated[
    str | None,
    Field(
        description="Train the head on this recipe's frozen descriptor (e.g. effnet-d4-flat: "
        "multi-block ImageNet features) instead of --backbone; no fine-tuning then."
    ),
]
FineTuneSteps = Annotated[
    int,
    Field(
        ge=0,
        description="After training on frozen features, train the backbone too for this "
        "many batches (0: backbone frozen)",
    ),
]


class TrainConfig(BaseModel):
    """What every method's config has."""

    holdout: Holdout = 0.5
    seed: Seed = 0


class TilesConfig(TrainConfig):
    """A method trained on tiles of `tile_size` px."""

    tile_size: int = 224


class HeadConfig(TilesConfig):
    """A head trained on a frozen backbone's features (then, optionally, with it)."""

    backbone: Backbone = "small"
    backbone_weights: BackboneWeights = None
    #: > 0: then train backbone + head jointly on images.
    fine_tune_steps: FineTuneSteps = 0


class TrainReport(BaseModel):
    """What every method reports: the weights file written and its sha256, the verdict,
    where it ran and how long it took (s)."""

    weights: str
    sha256: str
    verdict: Verdict
    device: str
    seconds: float


class TilesReport(TrainReport):
    """A method trained on tiles: how many it trained on and held out."""

    train_tiles: int
    holdout_tiles: int


@dataclass(frozen=True)
class TrainInputs:
    """What a `cbir train` command was given to train on."""

    tiles: Path | None = None
    labels: Path | None = None
    slides: list[Path] | None = None
    base_magnification: float | None = None


#: (inputs, weights file to write, config, device, progress) -> the method's report.
Runner = Callable[[TrainInputs, Path, Any, str, Progress], Any]


@dataclass(frozen=True)
class TrainMethod:
    """One `cbir train <name>`: `help` is its command's help (first line: the summary)."""

    name: str
    help: str
    config: type[BaseModel]
    inputs: Inputs
    run: Runner
    summary: Callable[[Any], str]


def tile_method(
    model: type[C], labelled: bool = True
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Make `fit(run, cfg, out, tiles_root) -> report` the method's training function
    `train(tiles_root, out, config=None, labels_csv=None, device="auto", progress=None)`:
    the config defaults to `model()`, and `run` is the started TrainingRun (seeded,
    device picked, tiles listed and split; labels required unless `labelled` is False)."""

    def decorate(fit: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fit)
        def train(
            tiles_root: Path,
            out: str | os.PathLike[str],
            config: C | None = None,
            labels_csv: Path | None = None,
            device: str | None = "auto",
            progress: Progress | None = None,
        ) -> R:
            from cbir.nn.train.setup import TrainingRun

            cfg = config or model()
            run = TrainingRun.begin(
                tiles_root, labels_csv, cfg.holdout, cfg.seed, device, progress, labelled
            )
            return fit(run, cfg, Path(out), Path(tiles_root))

        return train

    return decorate


def on_tiles(train: Callable[..., Any]) -> Runner:
    """The runner of a method trained as `train(tiles, out, config, labels, device,
    progress)`."""
    return lambda given, out, cfg, device, progress: train(
        given.tiles, out, cfg, given.labels, device, progress
    )


def accuracy_text(value: float | None) -> str:
    """An accuracy for a summary line: three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def method_names() -> list[str]:
    """Every method's name: the modules of this package but the helpers (none imported)."""
    package = importlib.import_module("cbir.nn.train")
    names = (i.name for i in pkgutil.iter_modules(package.__path__))
    return sorted(n for n in names if n not in HELPERS)


def load_method(name: str) -> TrainMethod:
    """The `METHOD` its module declares (imports the module, which imports no torch)."""
    method = importlib.import_module(f"cbir.nn.train.{name}").METHOD
    if method.name != name:
        raise ValueError(f"cbir.nn.train.{name} declares method {method.name!r}")
    return method
