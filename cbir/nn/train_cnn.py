"""`cbir train cnn`: train the AlexNet-like trunk as a tissue classifier on labelled tiles."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from cbir.nn.augment import augment
from cbir.nn.backbones import backbone_entry, backbone_weights_file, create_backbone
from cbir.nn.cnn import TissueClassifier, to_tensor
from cbir.nn.device import resolve_device
from cbir.nn.verdict import Verdict, judge
from cbir.nn.weights import WeightsError, save_weights
from cbir.progress import NoProgress, Progress
from cbir.tileset import load_labelled_tiles, read_tiles


class CnnTrainConfig(BaseModel):
    epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 48
    out_dim: int = 64
    backbone: str = "alexnet-like"  # or "alexnet" (torchvision layout)
    backbone_weights: str | None = None  # torchvision AlexNet .pth to start from
    holdout: float = 0.5  # fraction of each class held out (not trained on)
    seed: int = 0
    tile_size: int = 224


class CnnTrainReport(BaseModel):
    weights: str
    sha256: str
    classes: list[str]
    train_tiles: int
    holdout_tiles: int
    epochs: int
    first_epoch_loss: float
    last_epoch_loss: float
    holdout_accuracy: float | None
    verdict: Verdict
    device: str
    seconds: float


def stratified_split(labels: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, holdout) indices: `holdout` of each class, at least one per side per class."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in sorted(set(labels)):
        idx = np.array([i for i, label in enumerate(labels) if label == cls])
        rng.shuffle(idx)
        n_held = min(len(idx) - 1, max(1, round(holdout * len(idx)))) if holdout > 0 else 0
        held += idx[:n_held].tolist()
        train += idx[n_held:].tolist()
    return sorted(train), sorted(held)


def train_cnn(
    tiles_root: Path,
    out: str | os.PathLike[str],
    config: CnnTrainConfig | None = None,
    labels_csv: Path | None = None,
    device: str | None = "auto",
    progress: Progress | None = None,
) -> CnnTrainReport:
    """Train, evaluate classification accuracy on the held-out split, save weights whose
    spec records the class names and which tiles were trained on."""
    start = time.perf_counter()
    cfg = config or CnnTrainConfig()
    progress = progress or NoProgress()
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device)
    data = load_labelled_tiles(tiles_root, labels_csv)
    classes = sorted(set(data.labels))
    y_all = torch.tensor([classes.index(label) for label in data.labels])
    x_all = to_tensor(
        read_tiles(data.paths, cfg.tile_size), backbone_entry(cfg.backbone).normalization
    )
    train_idx, held_idx = stratified_split(data.labels, cfg.holdout, cfg.seed)
    entry = backbone_entry(cfg.backbone)
    if cfg.backbone_weights is not None and entry.layout == "cbir":
        raise WeightsError(
            f"--backbone-weights: backbone {cfg.backbone} has no pretrained checkpoint layout "
            "(use alexnet, efficientnet_lite0, resnet50, ...)"
        )
    trunk = create_backbone(cfg.backbone, width=cfg.width, out_dim=cfg.out_dim)
    start_from = backbone_weights_file(cfg.backbone, cfg.backbone_weights)
    if start_from is not None:  # a local file, or the packaged ImageNet weights
        entry.load(trunk, start_from)
    model = TissueClassifier(trunk, len(classes)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-len(train_idx) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    progress.start("train cnn", cfg.epochs)
    epoch_losses = []
    for _ in range(cfg.epochs):
        model.train()
        order = torch.tensor(train_idx)[torch.randperm(len(train_idx), generator=gen)]
        total, count = 0.0, 0
        for batch in order.split(cfg.batch_size):
            xb = augment(x_all[batch], gen).to(dev)
            loss = loss_fn(model(xb), y_all[batch].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        epoch_losses.append(total / count)
        progress.advance(1)
    accuracy = None
    if held_idx:
        model.eval()
        with torch.no_grad():
            pred = torch.cat(
                [model(x_all[b].to(dev)).argmax(1).cpu() for b in torch.tensor(held_idx).split(64)]
            )
        accuracy = float((pred == y_all[held_idx]).float().mean())
    spec = {
        "arch": cfg.backbone,
        "width": cfg.width,
        "out_dim": int(trunk.out_dim),
        "tile_size": cfg.tile_size,
        "classes": classes,
        "train_paths": [data.paths[i] for i in train_idx],
        "holdout_paths": [data.paths[i] for i in held_idx],
        "config": cfg.model_dump(),
        "holdout_accuracy": accuracy,
    }
    verdict = judge(epoch_losses[0], epoch_losses[-1], accuracy, 1 / len(classes))
    spec["verdict"] = verdict.model_dump()
    sha = save_weights(out, "cnn", spec, model.trunk.state_dict())
    return CnnTrainReport(
        weights=str(out),
        sha256=sha,
        classes=classes,
        train_tiles=len(train_idx),
        holdout_tiles=len(held_idx),
        epochs=cfg.epochs,
        first_epoch_loss=epoch_losses[0],
        last_epoch_loss=epoch_losses[-1],
        holdout_accuracy=accuracy,
        verdict=verdict,
        device=str(dev),
        seconds=round(time.perf_counter() - start, 2),
    )
