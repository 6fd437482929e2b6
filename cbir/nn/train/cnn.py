"""`cbir train cnn`: train the AlexNet-like trunk as a tissue classifier on labelled tiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from cbir.nn.train import method as m

if TYPE_CHECKING:
    import torch

    from cbir.nn.train.setup import TrainingRun


class CnnTrainConfig(m.TilesConfig):
    epochs: m.Epochs = 60
    batch_size: m.BatchSize = 32
    lr: m.LearningRate = 3e-3
    weight_decay: float = 1e-4
    width: int = 48
    out_dim: int = 64
    backbone: Annotated[
        str,
        Field(
            description="alexnet-like (seed 000's narrow tower), alexnet (torchvision's "
            "layout), or any registered backbone (cbir backbones), e.g. efficientnet_lite0"
        ),
    ] = "alexnet-like"
    backbone_weights: m.BackboneWeights = None


class CnnTrainReport(m.TilesReport):
    classes: list[str]
    epochs: int
    first_epoch_loss: float
    last_epoch_loss: float
    holdout_accuracy: float | None


@m.tile_method(CnnTrainConfig)
def train_cnn(run: TrainingRun, cfg: CnnTrainConfig, out: Path, tiles_root: Path) -> CnnTrainReport:
    """Train, evaluate classification accuracy on the held-out split, save weights whose
    spec records the class names and which tiles were trained on."""
    import torch
    from torch import nn

    from cbir.nn.augment import augment
    from cbir.nn.backbones import backbone_entry, backbone_weights_file, create_backbone
    from cbir.nn.cnn import TissueClassifier, to_tensor
    from cbir.nn.train.loop import accuracy as held_out_accuracy
    from cbir.nn.train.loop import fit, one_cycle, shuffled
    from cbir.nn.verdict import judge
    from cbir.nn.weights import WeightsError
    from cbir.slides.tileset import read_tiles

    dev, progress, classes = run.device, run.progress, run.classes
    train_idx, held_idx = run.train_idx, run.held_idx
    y_all = torch.from_numpy(run.y)
    x_all = to_tensor(
        read_tiles(run.data.paths, cfg.tile_size), backbone_entry(cfg.backbone).normalization
    )
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
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(augment(x_all[batch], gen).to(dev)), y_all[batch].to(dev))

    epoch_losses = fit(
        opt,
        cfg.epochs,
        shuffled(train_idx, cfg.batch_size, gen),
        batch_loss,
        progress,
        "train cnn",
        one_cycle(opt, cfg.lr, cfg.epochs, len(train_idx), cfg.batch_size),
        before_round=model.train,
    )
    model.eval()
    accuracy = held_out_accuracy(model, x_all, y_all, held_idx, dev)
    spec = run.spec(
        cfg,
        arch=cfg.backbone,
        width=cfg.width,
        out_dim=int(trunk.out_dim),
        tile_size=cfg.tile_size,
        holdout_accuracy=accuracy,
    )
    verdict = judge(epoch_losses[0], epoch_losses[-1], accuracy, run.chance)
    saved = run.finish(out, "cnn", spec, model.trunk.state_dict(), verdict)
    return CnnTrainReport(
        **saved,
        classes=classes,
        epochs=cfg.epochs,
        first_epoch_loss=epoch_losses[0],
        last_epoch_loss=epoch_losses[-1],
        holdout_accuracy=accuracy,
    )


def summary(report: CnnTrainReport) -> str:
    return (
        f"wrote {report.weights} ({report.train_tiles} training tiles, "
        f"{len(report.classes)} classes, loss {report.first_epoch_loss:.3f} -> "
        f"{report.last_epoch_loss:.3f}, held-out accuracy "
        f"{m.accuracy_text(report.holdout_accuracy)}, {report.seconds:.1f} s on {report.device})"
    )


METHOD = m.TrainMethod(
    name="cnn",
    help="Train seed 000's AlexNet-like trunk as a tissue classifier; weights for `cnn`.\n\n"
    "Augmentation: flips, 90-degree rotations, colour jitter.",
    config=CnnTrainConfig,
    inputs="labelled-tiles",
    run=m.on_tiles(train_cnn),
    summary=summary,
)
