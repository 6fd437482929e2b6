"""`cbir train scale`: the scale comparator on pairs cut from the user's slides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from cbir.nn.train import method as m
from cbir.progress import Progress
from cbir.recipes import DEFAULT_MAGNIFICATIONS


class ScaleTrainConfig(m.TrainConfig):
    magnifications: Annotated[
        tuple[float, ...], Field(description="Comma-separated magnifications to tell apart.")
    ] = DEFAULT_MAGNIFICATIONS
    tiles_per_magnification: Annotated[
        int, Field(ge=2, description="Tiles cut per slide and magnification.")
    ] = 64
    train_pairs: Annotated[int, Field(ge=10, description="Training pairs.")] = 2000
    held_pairs: int = 600
    holdout: Annotated[
        float, Field(ge=0.05, le=0.9, description="Bottom fraction of each slide held out.")
    ] = 0.3
    epochs: m.Epochs = 12
    batch_size: m.BatchSize = 32
    lr: m.LearningRate = 1e-3
    width: int = 24
    input_size: int = 112
    arch: Annotated[
        Literal["siamese", "stacked"],
        Field(description="siamese, or stacked (seed 000's 6-channel convolutions)"),
    ] = "siamese"

    @field_validator("magnifications", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        """ "5,10x,20" (as typed) -> (5.0, 10.0, 20.0)."""
        if isinstance(value, str):
            return tuple(float(v.strip().rstrip("x")) for v in value.split(",") if v.strip())
        return value


class ScaleTrainReport(m.TrainReport):
    magnifications: list[float]
    train_pairs: int
    held_pairs: int
    first_epoch_loss: float
    last_epoch_loss: float
    held_accuracy: float


def train_scale(
    slides: list[Path],
    out: str | os.PathLike[str],
    config: ScaleTrainConfig | None = None,
    device: str | None = "auto",
    base_magnification: float | None = None,
    progress: Progress | None = None,
) -> ScaleTrainReport:
    """Train on pairs from the top of each slide; report accuracy on pairs from the
    bottom `holdout` fraction (tiles never seen in training)."""
    import torch
    from torch import nn

    from cbir.nn.augment import augment
    from cbir.nn.scale import ScaleComparator, pair_tensor
    from cbir.nn.train.loop import fit, predict, shuffled
    from cbir.nn.train.scale_pairs import make_pairs, sample_scale_tiles
    from cbir.nn.train.setup import Run
    from cbir.nn.verdict import judge

    cfg = config or ScaleTrainConfig()
    run = Run.start(cfg.seed, device, progress)
    dev = run.device
    rng = np.random.default_rng(cfg.seed)
    sampled = sample_scale_tiles(
        slides,
        cfg.magnifications,
        cfg.tiles_per_magnification,
        cfg.holdout,
        cfg.seed,
        base_magnification,
    )
    a, b, y = make_pairs(sampled.tiles["train"], cfg.train_pairs, rng)
    ha, hb, hy = make_pairs(sampled.tiles["held"], cfg.held_pairs, rng)
    x = pair_tensor(a, b, cfg.input_size)
    hx = pair_tensor(ha, hb, cfg.input_size)
    model = ScaleComparator(cfg.width, input_size=cfg.input_size, arch=cfg.arch).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    yt = torch.from_numpy(y)

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        xb = augment(x[batch], gen, jitter=0.05).to(dev)  # same flip/turn for both tiles
        return loss_fn(model(xb), yt[batch].to(dev))

    batches = shuffled(range(len(x)), cfg.batch_size, gen)
    losses = fit(
        opt, cfg.epochs, batches, batch_loss, run.progress, "train scale", None, model.train
    )
    model.eval()
    logits = predict(model, hx, range(len(hx)), dev, batch_size=128)
    accuracy = float(((logits > 0).float().numpy() == hy).mean())
    mags = sorted(sampled.tiles["train"])
    spec = {
        "width": cfg.width,
        "input_size": cfg.input_size,
        "arch": cfg.arch,
        "magnifications": mags,
        "config": cfg.model_dump(),
        "held_accuracy": accuracy,
        "slides": [str(p) for p in slides],
    }
    verdict = judge(losses[0], losses[-1], accuracy, 0.5)  # pairs are balanced
    saved = run.finish(out, "scale", spec, model.state_dict(), verdict)
    return ScaleTrainReport(
        **saved,
        magnifications=mags,
        train_pairs=len(x),
        held_pairs=len(hx),
        first_epoch_loss=losses[0],
        last_epoch_loss=losses[-1],
        held_accuracy=accuracy,
    )


def summary(report: ScaleTrainReport) -> str:
    return (
        f"wrote {report.weights}: {report.train_pairs} training pairs over "
        f"{', '.join(f'{mag:g}x' for mag in report.magnifications)}; held-out pair "
        f"accuracy {report.held_accuracy:.3f} ({report.held_pairs} pairs, "
        f"{report.seconds:.1f} s on {report.device})"
    )


METHOD = m.TrainMethod(
    name="scale",
    help="Train seed 000's scale comparator on same/different-magnification tile pairs cut "
    "from your slides; reports accuracy on pairs from held-out slide parts.",
    config=ScaleTrainConfig,
    inputs="slides",
    run=lambda given, out, cfg, device, progress: train_scale(
        given.slides or [], out, cfg, device, given.base_magnification, progress
    ),
    summary=summary,
)
