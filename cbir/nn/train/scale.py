"""`cbir train scale`: the scale comparator on pairs cut from the user's slides."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from cbir.nn.augment import augment
from cbir.nn.scale import ScaleComparator, pair_tensor
from cbir.nn.train.loop import fit, predict, shuffled
from cbir.nn.train.scale_pairs import make_pairs, sample_scale_tiles
from cbir.nn.train.setup import Run
from cbir.nn.verdict import Verdict, judge
from cbir.progress import Progress
from cbir.recipes import DEFAULT_MAGNIFICATIONS


class ScaleTrainConfig(BaseModel):
    magnifications: tuple[float, ...] = DEFAULT_MAGNIFICATIONS
    tiles_per_magnification: int = 64
    train_pairs: int = 2000
    held_pairs: int = 600
    holdout: float = 0.3
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 24
    input_size: int = 112
    arch: str = "siamese"
    seed: int = 0


class ScaleTrainReport(BaseModel):
    weights: str
    sha256: str
    magnifications: list[float]
    train_pairs: int
    held_pairs: int
    first_epoch_loss: float
    last_epoch_loss: float
    held_accuracy: float
    verdict: Verdict
    device: str
    seconds: float


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
    sha = run.save(out, "scale", spec, model.state_dict(), verdict)
    return ScaleTrainReport(
        weights=str(out),
        sha256=sha,
        magnifications=mags,
        train_pairs=len(x),
        held_pairs=len(hx),
        first_epoch_loss=losses[0],
        last_epoch_loss=losses[-1],
        held_accuracy=accuracy,
        verdict=verdict,
        device=str(dev),
        seconds=run.seconds,
    )
