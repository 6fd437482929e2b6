"""`cbir train deephash`: seed 001's hashing autoencoder on frozen backbone features."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from cbir.errors import CbirError
from cbir.nn.train import method as m

if TYPE_CHECKING:
    import torch

    from cbir.nn.train.setup import TrainingRun


class DeepHashTrainConfig(m.HeadConfig):
    base_recipe: m.BaseRecipe = None
    bits: Annotated[int, Field(ge=8, le=256, description="Hash bits q.")] = 48
    #: The reconstruction term: "sum" over the d input dims (the seed's ||x - x^||^2),
    #: or their "mean", which keeps it from swamping the NLL on wide inputs (1280-d).
    reconstruction: Annotated[
        Literal["sum", "mean"],
        Field(
            description="Reconstruction term: mean (over input dims) or sum (the seed's "
            "||x - x^||^2, which swamps the class term on wide features)"
        ),
    ] = "mean"
    epochs: m.Epochs = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4  # lambda on ||Theta||^2
    fine_tune_batch: int = 32


class DeepHashTrainReport(m.TilesReport):
    backbone: str
    bits: int
    first_loss: float
    last_loss: float
    holdout_accuracy: float | None
    bit_statistics: dict[str, float]  # on the held-out tiles (all tiles if none held out)


@m.tile_method(DeepHashTrainConfig)
def train_deephash(
    run: TrainingRun, cfg: DeepHashTrainConfig, out: Path, tiles_root: Path
) -> DeepHashTrainReport:
    """Backbone frozen (from `backbone_weights`, or seeded random init); the autoencoder and
    classifier train full-batch on its features of the training split."""
    import numpy as np
    import torch

    from cbir.descriptors.head_input import HeadInput
    from cbir.encoders.bits import bit_statistics
    from cbir.nn.deephash import TiedHashAutoencoder, deephash_loss
    from cbir.nn.train.finetune import fine_tune
    from cbir.nn.train.loop import fit, whole
    from cbir.nn.verdict import judge
    from cbir.nn.weights import prefixed_state
    from cbir.slides.tileset import read_tiles

    if cfg.base_recipe is not None and cfg.fine_tune_steps:
        raise CbirError("--fine-tune-steps trains a backbone; a --base-recipe descriptor is frozen")
    dev, progress, classes = run.device, run.progress, run.classes
    train_idx, held_idx = run.train_idx, run.held_idx
    y = torch.from_numpy(run.y)
    source = HeadInput.for_training(cfg.backbone, cfg.backbone_weights, cfg.base_recipe, dev)
    tile_size = source.tile_size or cfg.tile_size
    tiles = read_tiles(run.data.paths, tile_size)
    raw = source.raw(tiles)
    source.fit_scaling(raw[train_idx], "minmax")  # a base descriptor's features -> [0, 1]
    feats = source.scaled(raw)
    model = TiedHashAutoencoder(feats.shape[1], cfg.bits, len(classes))
    if source.base is None:  # a backbone's non-negative features, scaled by their maximum
        model.feature_scale.copy_(feats[train_idx].amax(dim=0).clamp_min(1e-6))
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    xf, yf = feats[train_idx].to(dev), y[train_idx].to(dev)
    losses = fit(
        opt,
        cfg.epochs,
        whole((xf, yf), len(train_idx)),
        lambda b: deephash_loss(model, b[0], b[1], cfg.weight_decay, cfg.reconstruction)[0],
        progress,
        "train deephash",
        before_round=model.train,
    )
    if cfg.fine_tune_steps:
        rng = np.random.default_rng(cfg.seed)
        y_dev = y.to(dev)

        def batch_loss(xb: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            labels = y_dev[torch.from_numpy(idx).to(dev)]
            return deephash_loss(model, backbone(xb), labels, cfg.weight_decay, cfg.reconstruction)[
                0
            ]

        def sample() -> np.ndarray:
            return rng.choice(train_idx, min(cfg.fine_tune_batch, len(train_idx)), replace=False)

        backbone = source.net
        assert backbone is not None
        model.train()
        losses += fine_tune(
            run, cfg, backbone, model.parameters(), batch_loss, tiles, source.normalization, sample
        )
        feats = source.features(tiles)
    model.eval()
    eval_idx = held_idx or train_idx
    with torch.no_grad():
        h = model.hash(feats[eval_idx].to(dev)).cpu()
        acc = None
        if held_idx:
            acc = float((model.classifier(h.to(dev)).argmax(1).cpu() == y[held_idx]).float().mean())
    stats = bit_statistics((h > 0.5).numpy())
    state = {**source.state(), **prefixed_state(hash=model.state_dict())}
    spec = run.spec(
        cfg,
        **source.spec(),
        fine_tuned=bool(cfg.fine_tune_steps),
        bits=cfg.bits,
        in_dim=int(feats.shape[1]),
        tile_size=tile_size,
        bit_statistics=stats,
    )
    verdict = judge(losses[0], losses[-1], acc, run.chance, stats, cfg.bits, len(eval_idx))
    saved = run.finish(out, "deephash", spec, state, verdict)
    return DeepHashTrainReport(
        **saved,
        backbone=cfg.base_recipe or cfg.backbone,
        bits=cfg.bits,
        first_loss=losses[0],
        last_loss=losses[-1],
        holdout_accuracy=acc,
        bit_statistics=stats,
    )


def summary(report: DeepHashTrainReport) -> str:
    st = report.bit_statistics
    return (
        f"wrote {report.weights} ({report.bits} bits on {report.backbone}; loss "
        f"{report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
        f"{st['bit_balance']:.3f}, mean |bit correlation| "
        f"{st['bit_correlation']:.3f}; {report.seconds:.1f} s on {report.device})"
    )


METHOD = m.TrainMethod(
    name="deephash",
    help="Train seed 001's deep hashing (tied autoencoder + classifier on frozen backbone or "
    "--base-recipe features); weights for the deephash<q>-ivf recipes.",
    config=DeepHashTrainConfig,
    inputs="labelled-tiles",
    run=m.on_tiles(train_deephash),
    summary=summary,
)
