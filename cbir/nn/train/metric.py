"""`cbir train metric`: seed 002's embedding head on frozen backbone features of
augmented tiles, with the semi-hard triplet loss or cross-entropy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field

from cbir.errors import CbirError
from cbir.nn.train import method as m

if TYPE_CHECKING:
    import torch

    from cbir.nn.train.setup import TrainingRun


class MetricTrainConfig(m.HeadConfig):
    loss: Annotated[
        Literal["triplet", "crossentropy"],
        Field(description="Loss: triplet is semi-hard, with online mining"),
    ] = "triplet"
    base_recipe: m.BaseRecipe = None
    dim: Annotated[int, Field(ge=2, le=4096, description="Embedding size (the seed's 512).")] = 512
    margin: Annotated[float, Field(ge=0.0, description="Triplet margin.")] = 0.2
    augmentations: int = 8  # augmented copies per training tile (features precomputed)
    steps: Annotated[int, Field(ge=1, description="Training steps.")] = 400
    classes_per_batch: int = 8  # P x K batches for online mining
    tiles_per_class: int = 8
    lr: float = 1e-3


class MetricTrainReport(m.TilesReport):
    loss: str
    backbone: str
    first_loss: float
    last_loss: float
    mean_triplets_per_batch: float | None
    holdout_knn_accuracy: float | None  # 1-NN among held-out tiles, leave-one-out


def knn_accuracy(emb: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Leave-one-out k-NN (majority, ties to the nearest) accuracy by Euclidean distance."""
    d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    correct = 0
    for i, row in enumerate(nearest):
        votes = list(labels[row])
        winner = max(votes, key=lambda c: (votes.count(c), -votes.index(c)))
        correct += winner == labels[i]
    return correct / len(labels)


@m.tile_method(MetricTrainConfig)
def train_metric(
    run: TrainingRun, cfg: MetricTrainConfig, out: Path, tiles_root: Path
) -> MetricTrainReport:
    import torch
    from torch.nn import functional as F

    from cbir.descriptors.head_input import HeadInput
    from cbir.nn.metric import MetricHead, augment_image, semi_hard_triplet_loss
    from cbir.nn.train.finetune import fine_tune
    from cbir.nn.train.loop import fit, sampled, window_losses
    from cbir.nn.verdict import judge
    from cbir.nn.weights import prefixed_state
    from cbir.slides.tileset import read_tiles

    if cfg.base_recipe is not None and cfg.fine_tune_steps:
        raise CbirError("--fine-tune-steps trains a backbone; a --base-recipe descriptor is frozen")
    dev, progress, classes, y_all = run.device, run.progress, run.classes, run.y
    train_idx, held_idx = run.train_idx, run.held_idx
    rng = np.random.default_rng(cfg.seed)
    source = HeadInput.for_training(cfg.backbone, cfg.backbone_weights, cfg.base_recipe, dev)
    tile_size = source.tile_size or cfg.tile_size
    tiles = read_tiles(run.data.paths, tile_size)
    copies = np.stack(
        [augment_image(tiles[i], rng) for i in train_idx for _ in range(cfg.augmentations)]
    )
    raw = source.raw(copies)
    source.fit_scaling(raw, "standard")
    x_train = source.scaled(raw)
    y_train = torch.from_numpy(np.repeat(y_all[train_idx], cfg.augmentations))
    head = MetricHead(
        x_train.shape[1], cfg.dim, len(classes) if cfg.loss == "crossentropy" else 0
    ).to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    by_class = {c: np.flatnonzero(y_train.numpy() == c) for c in range(len(classes))}
    counts: list[int] = []

    def draw() -> np.ndarray:  # P classes x K tiles, for online mining
        chosen = rng.choice(len(classes), min(cfg.classes_per_batch, len(classes)), replace=False)
        return np.concatenate([rng.choice(by_class[c], cfg.tiles_per_class) for c in chosen])

    def step_loss(batch: np.ndarray) -> torch.Tensor:
        emb = head(x_train[batch].to(dev))
        yb = y_train[batch].to(dev)
        if cfg.loss == "triplet":
            loss, count = semi_hard_triplet_loss(emb, yb, cfg.margin)
            counts.append(count)
            return loss
        return F.cross_entropy(head.classifier(emb), yb)

    losses = fit(
        opt,
        cfg.steps,
        sampled(draw),
        step_loss,
        progress,
        f"train metric ({cfg.loss})",
        before_round=head.train,
    )
    if cfg.fine_tune_steps:
        y_tiles = torch.from_numpy(y_all).to(dev)
        tile_class = {
            c: np.array([i for i in train_idx if y_all[i] == c]) for c in range(len(classes))
        }

        def sample() -> np.ndarray:  # P classes x K tiles, as for the frozen phase
            chosen = rng.choice(
                len(classes), min(cfg.classes_per_batch, len(classes)), replace=False
            )
            return np.concatenate(
                [
                    rng.choice(tile_class[c], cfg.tiles_per_class)
                    for c in chosen
                    if len(tile_class[c])
                ]
            )

        backbone = source.net
        assert backbone is not None

        def batch_loss(xb: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            emb = head(backbone(xb))
            yb = y_tiles[torch.from_numpy(idx).to(dev)]
            if cfg.loss == "triplet":
                return semi_hard_triplet_loss(emb, yb, cfg.margin)[0]
            return F.cross_entropy(head.classifier(emb), yb)

        head.train()
        losses += fine_tune(
            run, cfg, backbone, head.parameters(), batch_loss, tiles, source.normalization, sample
        )
    accuracy = None
    if len(held_idx) > 1:
        head.eval()
        with torch.no_grad():
            emb = head(source.features(tiles[held_idx])).cpu()
        accuracy = knn_accuracy(emb.numpy(), y_all[held_idx])
    head_state = {k: v for k, v in head.state_dict().items() if not k.startswith("classifier")}
    state = {**source.state(), **prefixed_state(head=head_state)}
    spec = run.spec(
        cfg,
        **source.spec(),
        fine_tuned=bool(cfg.fine_tune_steps),
        dim=cfg.dim,
        in_dim=int(x_train.shape[1]),
        loss=cfg.loss,
        tile_size=tile_size,
    )
    first, last = window_losses(losses)
    verdict = judge(first, last, accuracy, run.chance)
    saved = run.finish(out, "metric", spec, state, verdict)
    return MetricTrainReport(
        **saved,
        loss=cfg.loss,
        backbone=cfg.base_recipe or cfg.backbone,
        first_loss=first,
        last_loss=last,
        mean_triplets_per_batch=float(np.mean(counts)) if counts else None,
        holdout_knn_accuracy=accuracy,
    )


def summary(report: MetricTrainReport) -> str:
    return (
        f"wrote {report.weights} ({report.loss} loss {report.first_loss:.3f} -> "
        f"{report.last_loss:.3f}; held-out 1-NN accuracy "
        f"{m.accuracy_text(report.holdout_knn_accuracy)}; {report.seconds:.1f} s)"
    )


METHOD = m.TrainMethod(
    name="metric",
    help="Train seed 002's embedding (shift/zoom/rotation/flip augmentation, on a frozen "
    "backbone or --base-recipe descriptor); weights for the metric-flat / metric-hnsw "
    "recipes.",
    config=MetricTrainConfig,
    inputs="labelled-tiles",
    run=m.on_tiles(train_metric),
    summary=summary,
)
