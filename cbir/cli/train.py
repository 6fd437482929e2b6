"""`cbir train <method>`: one command builder for every method. A command turns its
options into a job (progress -> report); the builder runs it under a progress bar, prints
the training verdict on stderr and the report as JSON or one summary line."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cbir.cli import train_summaries as summaries
from cbir.cli.errors import cli_errors
from cbir.cli.options import (
    BackboneOpt,
    BackboneWeightsOpt,
    BaseMagOpt,
    DeviceOpt,
    FineTuneOpt,
    HeadBaseOpt,
    HoldoutOpt,
    JsonOpt,
    LabelledTilesOpt,
    LabelsOpt,
    OutWeightsOpt,
)
from cbir.cli.paths import expand_slides

train_app = typer.Typer(no_args_is_help=True, help="Train the networks of learned recipes.")

Job = Callable[[Any], Any]  # progress -> a training report with a `verdict`


def train_command(
    name: str, summary: Callable[[Any], str]
) -> Callable[[Callable[..., Job]], Callable[..., None]]:
    """Register `cbir train <name>`: the decorated function maps its options to a job."""

    def decorate(build: Callable[..., Job]) -> Callable[..., None]:
        @functools.wraps(build)
        def command(*args: Any, **kwargs: Any) -> None:
            from cbir.cli.render import RichProgress, show_verdict, stdout

            job = build(*args, **kwargs)
            with RichProgress() as progress:
                report = job(progress)
            show_verdict(report.verdict)
            if kwargs.get("json_out"):
                typer.echo(report.model_dump_json())
            else:
                stdout.print(summary(report))

        return train_app.command(name)(cli_errors(command))

    return decorate


@train_command("cnn", summaries.cnn)
def train_cnn_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 60,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-3,
    holdout: HoldoutOpt = 0.5,
    backbone: Annotated[
        str,
        typer.Option(
            help="alexnet-like (seed 000's narrow tower), alexnet (torchvision's layout), or "
            "any registered backbone (cbir backbones), e.g. efficientnet_lite0"
        ),
    ] = "alexnet-like",
    backbone_weights: BackboneWeightsOpt = None,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 000's AlexNet-like trunk as a tissue classifier; weights for `cnn`.

    Augmentation: flips, 90-degree rotations, colour jitter."""
    from cbir.nn.train.cnn import CnnTrainConfig, train_cnn

    cfg = CnnTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
        backbone=backbone,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    return lambda progress: train_cnn(tiles, out, cfg, labels, device, progress)


@train_command("vae", summaries.vae)
def train_vae_cmd(
    tiles: Annotated[
        Path,
        typer.Option(
            "--tiles",
            help="Tiles: any folder of images (labels, if present, only stratify the split).",
        ),
    ],
    out: OutWeightsOpt,
    latent: Annotated[int, typer.Option(min=32, max=512, help="Latent size.")] = 128,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Fraction of tiles held out.")
    ] = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 000's tile VAE; its posterior mean mu is the `vae` descriptor."""
    from cbir.nn.train.vae import VaeTrainConfig, train_vae

    cfg = VaeTrainConfig(
        latent=latent, epochs=epochs, batch_size=batch_size, lr=lr, holdout=holdout, seed=seed
    )
    return lambda progress: train_vae(tiles, out, cfg, labels, device, progress)


@train_command("deephash", summaries.deephash)
def train_deephash_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    bits: Annotated[int, typer.Option(min=8, max=256, help="Hash bits q.")] = 48,
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    base_recipe: HeadBaseOpt = None,
    reconstruction: Annotated[
        str,
        typer.Option(
            help="Reconstruction term: mean (over input dims) or sum (the seed's ||x - x^||^2, "
            "which swamps the class term on wide features)"
        ),
    ] = "mean",
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 001's deep hashing (tied autoencoder + classifier on frozen backbone or
    --base-recipe features); weights for the deephash<q>-ivf recipes."""
    from cbir.errors import CbirError
    from cbir.nn.train.deephash import DeepHashTrainConfig, train_deephash

    if reconstruction not in ("mean", "sum"):
        raise CbirError(f"--reconstruction {reconstruction!r}: expected mean or sum")
    cfg = DeepHashTrainConfig(
        fine_tune_steps=fine_tune_steps,
        backbone=backbone,
        base_recipe=base_recipe,
        reconstruction=reconstruction,
        bits=bits,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    return lambda progress: train_deephash(tiles, out, cfg, labels, device, progress)


@train_command("metric", summaries.metric)
def train_metric_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    loss: Annotated[
        str, typer.Option(help="triplet (semi-hard, online mining) or crossentropy")
    ] = "triplet",
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    base_recipe: HeadBaseOpt = None,
    dim: Annotated[int, typer.Option(min=2, help="Embedding size (the seed's 512).")] = 512,
    labels: LabelsOpt = None,
    steps: Annotated[int, typer.Option(min=1)] = 400,
    margin: Annotated[float, typer.Option(min=0.0)] = 0.2,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 002's embedding (shift/zoom/rotation/flip augmentation, on a frozen
    backbone or --base-recipe descriptor); weights for the metric-flat / metric-hnsw
    recipes."""
    from cbir.errors import CbirError
    from cbir.nn.train.metric import MetricTrainConfig, train_metric

    if loss not in ("triplet", "crossentropy"):
        raise CbirError(f"--loss {loss!r}: expected triplet or crossentropy")
    cfg = MetricTrainConfig(
        fine_tune_steps=fine_tune_steps,
        loss=loss,
        backbone=backbone,
        base_recipe=base_recipe,
        dim=dim,
        steps=steps,
        margin=margin,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    return lambda progress: train_metric(tiles, out, cfg, labels, device, progress)


@train_command("delf", summaries.delf)
def train_delf_cmd(
    tiles: Annotated[
        Path,
        typer.Option(
            "--tiles",
            help="Labelled tiles or images: class sub-folders, or a labels.csv (path,label).",
        ),
    ],
    out: OutWeightsOpt,
    trunk: Annotated[str, typer.Option(help="resnet50 (conv4_x, 1024-d) or small-dense")] = (
        "resnet50"
    ),
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            "--backbone-weights", help="torchvision ResNet-50 state_dict (.pth), read locally"
        ),
    ] = None,
    labels: LabelsOpt = None,
    trunk_epochs: Annotated[int, typer.Option("--trunk-epochs", min=0)] = 20,
    attention_epochs: Annotated[int, typer.Option("--attention-epochs", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    holdout: HoldoutOpt = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 003's DELF network in two phases: the trunk as a classifier, then the
    attention head (trunk frozen, random rescales); weights for delf-hnsw and
    --local-weights."""
    from cbir.nn.train.delf import DelfTrainConfig, train_delf

    cfg = DelfTrainConfig(
        trunk=trunk,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
        trunk_epochs=trunk_epochs,
        attention_epochs=attention_epochs,
        batch_size=batch_size,
        lr=lr,
        holdout=holdout,
        seed=seed,
    )
    return lambda progress: train_delf(tiles, out, cfg, labels, device, progress)


@train_command("ssdh", summaries.ssdh)
def train_ssdh_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    bits: Annotated[int, typer.Option(min=8, max=256, help="Latent bits q.")] = 24,
    rol: Annotated[
        bool,
        typer.Option(
            "--rol/--no-rol",
            help="Reliability Object Layer; needs --masks. Without masks "
            "there is nothing to train the segmentation head on, so plain SSDH is trained.",
        ),
    ] = False,
    masks: Annotated[
        Path | None,
        typer.Option(
            help="Folder of label images (class id per pixel, 0 = background), same relative "
            "names as the tiles."
        ),
    ] = None,
    backbone: BackboneOpt = "small",
    backbone_weights: BackboneWeightsOpt = None,
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 300,
    holdout: HoldoutOpt = 0.5,
    fine_tune_steps: FineTuneOpt = 0,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 004's SSDH (latent sigmoid layer before the classifier), optionally with
    the ROL; weights for the ssdh<q>-ivf recipes."""
    from cbir.nn.train.ssdh import SSDHTrainConfig, train_ssdh

    cfg = SSDHTrainConfig(
        fine_tune_steps=fine_tune_steps,
        backbone=backbone,
        bits=bits,
        rol=rol,
        masks=str(masks) if masks else None,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
    )
    return lambda progress: train_ssdh(tiles, out, cfg, labels, device, progress)


@train_command("lda", summaries.lda)
def train_lda_cmd(
    tiles: LabelledTilesOpt,
    out: OutWeightsOpt,
    base_recipe: Annotated[
        str,
        typer.Option(
            "--base-recipe", help="Recipe whose (frozen) descriptor the projection is fitted on."
        ),
    ] = "effnet-d4-flat",
    shrinkage: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Within-class covariance shrinkage.")
    ] = 0.5,
    labels: LabelsOpt = None,
    holdout: HoldoutOpt = 0.5,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Fit a Fisher discriminant (shrinkage LDA) on a frozen descriptor of labelled tiles;
    weights for the effnet-lda-flat recipe."""
    from cbir.nn.train.lda import LdaTrainConfig, train_lda

    cfg = LdaTrainConfig(base_recipe=base_recipe, shrinkage=shrinkage, holdout=holdout, seed=seed)
    return lambda progress: train_lda(tiles, out, cfg, labels, device)  # no per-step progress


@train_command("scale", summaries.scale)
def train_scale_cmd(
    slides: Annotated[
        list[Path],
        typer.Option(
            "--slides",
            exists=True,  # checked before torch is imported
            help="Slides or folders of them (repeat the option for several).",
        ),
    ],
    out: OutWeightsOpt,
    magnifications: Annotated[
        str, typer.Option(help="Comma-separated magnifications to tell apart.")
    ] = "5,10,15,20,25,30,35,40",
    tiles_per_magnification: Annotated[int, typer.Option(min=2)] = 64,
    train_pairs: Annotated[int, typer.Option(min=10)] = 2000,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    holdout: Annotated[
        float, typer.Option(min=0.05, max=0.9, help="Bottom fraction of each slide held out.")
    ] = 0.3,
    arch: Annotated[
        str, typer.Option(help="siamese, or stacked (seed 000's 6-channel convolutions)")
    ] = "siamese",
    base_magnification: BaseMagOpt = None,
    seed: int = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> Job:
    """Train seed 000's scale comparator on same/different-magnification tile pairs cut
    from your slides; reports accuracy on pairs from held-out slide parts."""
    from cbir.nn.train.scale import ScaleTrainConfig, train_scale

    mags = tuple(float(m.strip().rstrip("x")) for m in magnifications.split(","))
    cfg = ScaleTrainConfig(
        magnifications=mags,
        tiles_per_magnification=tiles_per_magnification,
        train_pairs=train_pairs,
        epochs=epochs,
        holdout=holdout,
        seed=seed,
        arch=arch,
    )
    return lambda progress: train_scale(
        expand_slides(slides), out, cfg, device, base_magnification, progress
    )
