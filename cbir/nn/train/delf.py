"""`cbir train delf`: seed 003's two phases on labelled tiles or images.

1. The trunk is trained as a classifier (global average pooling + linear layer), from
   seeded random weights or a local torchvision ResNet-50 file.
2. The trunk is frozen; the attention head is trained through attention-weighted sum
   pooling of the (L2-normalised) local features + a linear classifier, on images
   rescaled by a random factor per batch so the scores hold across the pyramid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from cbir.nn.train import method as m
from cbir.progress import Progress

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cbir.nn.train.setup import TrainingRun


class DelfTrainConfig(m.TilesConfig):
    trunk: Annotated[str, Field(description="resnet50 (conv4_x, 1024-d) or small-dense")] = (
        "resnet50"
    )
    backbone_weights: Annotated[
        str | None,
        Field(
            description="torchvision ResNet-50 state_dict (.pth), read locally",
            json_schema_extra=m.A_FILE,
        ),
    ] = None
    trunk_epochs: Annotated[int, Field(ge=0, description="Phase 1 epochs (the trunk).")] = 20
    attention_epochs: Annotated[
        int, Field(ge=1, description="Phase 2 epochs (the attention head).")
    ] = 20
    batch_size: m.BatchSize = 16
    lr: m.LearningRate = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 512  # attention head width
    #: Phase 2 rescales each batch by a factor drawn log-uniformly from this range.
    rescale: tuple[float, float] = (0.7071, 1.4142)


class DelfTrainReport(m.TilesReport):
    trunk: str
    classes: list[str]
    trunk_losses: tuple[float, float]  # first and last epoch
    attention_losses: tuple[float, float]
    holdout_accuracy_trunk: float | None  # phase 1 classifier (global average pooling)
    holdout_accuracy_attention: float | None  # phase 2 classifier (attention pooling)


def _freeze_batchnorm(module: nn.Module) -> None:
    """Keep pretrained batch-norm statistics (small batches of one tissue would skew them)."""
    from torch import nn

    for part in module.modules():
        if isinstance(part, nn.modules.batchnorm._BatchNorm):
            part.eval()


def _run_epochs(
    epochs: int,
    train_idx: list[int],
    batch_size: int,
    params: list[nn.Parameter],
    cfg: DelfTrainConfig,
    step: Callable[[torch.Tensor], torch.Tensor],
    before_epoch: Callable[[], None],
    gen: torch.Generator,
    progress: Progress,
    label: str,
) -> list[float]:
    """AdamW + one-cycle over `epochs`; step(batch indices) -> loss. Mean loss per epoch."""
    import torch

    from cbir.nn.train.loop import fit, one_cycle, shuffled

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = one_cycle(opt, cfg.lr, epochs, len(train_idx), batch_size)
    batches = shuffled(train_idx, batch_size, gen)
    losses = fit(opt, epochs, batches, step, progress, label, sched, before_epoch)
    return losses or [math.nan]


@m.tile_method(DelfTrainConfig)
def train_delf(
    run: TrainingRun, cfg: DelfTrainConfig, out: Path, tiles_root: Path
) -> DelfTrainReport:
    """Train both phases, report held-out classification accuracy of each, save weights
    (trunk + attention head + both classifiers) with the classes and the split."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from cbir.nn.augment import augment
    from cbir.nn.cnn import to_tensor
    from cbir.nn.delf import DelfNet, attention_pool, dense_features
    from cbir.nn.train.loop import accuracy as held_out_accuracy
    from cbir.nn.verdict import judge
    from cbir.nn.weights import WeightsError, load_strict
    from cbir.slides.tileset import read_tiles

    dev, progress, classes = run.device, run.progress, run.classes
    train_idx, held_idx = run.train_idx, run.held_idx
    y_all = torch.from_numpy(run.y)
    net = DelfNet(cfg.trunk, cfg.hidden)
    pretrained = cfg.backbone_weights is not None
    if pretrained:
        if cfg.trunk != "resnet50":
            raise WeightsError(f"--backbone-weights needs --trunk resnet50, not {cfg.trunk}")
        load_strict(net.trunk, cfg.backbone_weights)
    x_all = to_tensor(read_tiles(run.data.paths, cfg.tile_size), net.info.normalization)
    net.to(dev)
    channels = net.info.channels
    trunk_classifier = nn.Linear(channels, len(classes)).to(dev)
    attention_classifier = nn.Linear(channels, len(classes)).to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)

    def trunk_logits(x: torch.Tensor) -> torch.Tensor:
        return trunk_classifier(dense_features(net.trunk, x).mean(dim=(2, 3)))

    def attention_logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = F.normalize(dense_features(net.trunk, x), dim=1)
        return attention_classifier(attention_pool(f, net.attention(f)))

    def phase1_step(batch: torch.Tensor) -> torch.Tensor:
        xb = augment(x_all[batch], gen).to(dev)
        return F.cross_entropy(trunk_logits(xb), y_all[batch].to(dev))

    def phase1_mode() -> None:
        net.trunk.train()
        if pretrained:
            _freeze_batchnorm(net.trunk)

    lo, hi = math.log(cfg.rescale[0]), math.log(cfg.rescale[1])

    def phase2_step(batch: torch.Tensor) -> torch.Tensor:
        xb = augment(x_all[batch], gen).to(dev)
        s = math.exp(lo + (hi - lo) * float(torch.rand(1, generator=gen)))
        side = max(32, round(xb.shape[-1] * s))
        xb = F.interpolate(xb, size=(side, side), mode="bilinear", align_corners=False)
        return F.cross_entropy(attention_logits(xb), y_all[batch].to(dev))

    def phase2_mode() -> None:
        net.trunk.eval()
        net.attention.train()

    trunk_losses = _run_epochs(
        cfg.trunk_epochs,
        train_idx,
        cfg.batch_size,
        [*net.trunk.parameters(), *trunk_classifier.parameters()],
        cfg,
        phase1_step,
        phase1_mode,
        gen,
        progress,
        "train delf trunk",
    )
    for p in net.trunk.parameters():
        p.requires_grad_(False)
    attention_losses = _run_epochs(
        cfg.attention_epochs,
        train_idx,
        cfg.batch_size,
        [*net.attention.parameters(), *attention_classifier.parameters()],
        cfg,
        phase2_step,
        phase2_mode,
        gen,
        progress,
        "train delf attention",
    )
    net.eval()

    def accuracy(logits: Callable[[torch.Tensor], torch.Tensor]) -> float | None:
        return held_out_accuracy(logits, x_all, y_all, held_idx, dev, batch_size=32)

    acc_trunk, acc_attention = accuracy(trunk_logits), accuracy(attention_logits)
    spec = run.spec(
        cfg,
        trunk=cfg.trunk,
        hidden=cfg.hidden,
        tile_size=cfg.tile_size,
        holdout_accuracy_trunk=acc_trunk,
        holdout_accuracy_attention=acc_attention,
    )
    state = {
        **net.state_dict(),
        **{f"trunk_classifier.{k}": v for k, v in trunk_classifier.state_dict().items()},
        **{f"attention_classifier.{k}": v for k, v in attention_classifier.state_dict().items()},
    }
    # the attention phase: what local features are ranked by
    verdict = judge(attention_losses[0], attention_losses[-1], acc_attention, run.chance)
    saved = run.finish(out, "delf", spec, state, verdict)
    return DelfTrainReport(
        **saved,
        trunk=cfg.trunk,
        classes=classes,
        trunk_losses=(trunk_losses[0], trunk_losses[-1]),
        attention_losses=(attention_losses[0], attention_losses[-1]),
        holdout_accuracy_trunk=acc_trunk,
        holdout_accuracy_attention=acc_attention,
    )


def summary(report: DelfTrainReport) -> str:
    return (
        f"wrote {report.weights} ({report.trunk}; held-out accuracy: trunk "
        f"{m.accuracy_text(report.holdout_accuracy_trunk)}, attention "
        f"{m.accuracy_text(report.holdout_accuracy_attention)}; {report.seconds:.1f} s)"
    )


METHOD = m.TrainMethod(
    name="delf",
    help="Train seed 003's DELF network in two phases: the trunk as a classifier, then the "
    "attention head (trunk frozen, random rescales); weights for delf-hnsw and "
    "--local-weights.",
    config=DelfTrainConfig,
    inputs="images",
    run=m.on_tiles(train_delf),
    summary=summary,
)
