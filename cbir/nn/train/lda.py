"""`cbir train lda`: a Fisher discriminant projection (scikit-learn's shrinkage LDA)
trained on a frozen descriptor of labelled tiles: the `lda` descriptor is
((x - mean) / scale) @ W, (n, classes - 1), compared by cosine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from cbir.errors import CbirError
from cbir.nn.train import method as m

if TYPE_CHECKING:
    from cbir.nn.train.setup import TrainingRun


class LdaTrainConfig(m.TrainConfig):
    base_recipe: Annotated[
        str, Field(description="Recipe whose (frozen) descriptor the projection is fitted on.")
    ] = "effnet-d4-flat"
    #: Ledoit-Wolf-style shrinkage of the within-class covariance (0: none, 1: diagonal).
    shrinkage: Annotated[
        float, Field(ge=0.0, le=1.0, description="Within-class covariance shrinkage.")
    ] = 0.5


class LdaTrainReport(m.TilesReport):
    base_recipe: str
    classes: list[str]
    dim: int
    train_accuracy: float
    holdout_accuracy: float | None


@m.tile_method(LdaTrainConfig)
def train_lda(run: TrainingRun, cfg: LdaTrainConfig, out: Path, tiles_root: Path) -> LdaTrainReport:
    """Describe the tiles with the base recipe's descriptor, standardise on the training
    split, fit LDA there; save the projection with the base descriptor's config."""
    import torch
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from cbir.descriptors import check_base
    from cbir.nn.verdict import judge
    from cbir.pipeline import TilePipeline
    from cbir.recipes import load_recipe
    from cbir.slides.tileset import read_tiles

    base = load_recipe(cfg.base_recipe)
    classes, y, train_idx, held_idx = run.classes, run.y, run.train_idx, run.held_idx
    descriptor = TilePipeline(base, device=str(run.device)).descriptor  # frozen: no weights
    check_base(base.name, descriptor)
    x = descriptor.describe(read_tiles(run.data.paths, base.tiling.tile_size)).astype(np.float64)
    mean = x[train_idx].mean(axis=0)
    sd = x[train_idx].std(axis=0)
    scale = np.where(sd > 1e-12, sd, 1.0)
    z = (x - mean) / scale
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=cfg.shrinkage)
    if len(train_idx) <= len(set(y[train_idx].tolist())):
        raise CbirError(
            f"lda needs more training tiles ({len(train_idx)}) than classes "
            f"({len(set(y[train_idx].tolist()))}): label more tiles, or lower --holdout"
        )
    lda.fit(z[train_idx], y[train_idx])
    dim = len(classes) - 1
    w = lda.scalings_[:, :dim]
    train_acc = float((lda.predict(z[train_idx]) == y[train_idx]).mean())
    held_acc = float((lda.predict(z[held_idx]) == y[held_idx]).mean()) if held_idx else None
    # No loss: judge the fit by accuracy, with the training error as "loss" (1 -> 1 - acc).
    verdict = judge(1.0, 1.0 - train_acc, held_acc, run.chance)
    spec = run.spec(
        cfg,
        base_recipe=base.name,
        base_descriptor=base.descriptor.model_dump(),
        tile_size=base.tiling.tile_size,
        dim=dim,
    )
    state = {
        "mean": torch.from_numpy(mean.astype(np.float32)),
        "scale": torch.from_numpy(scale.astype(np.float32)),
        "projection": torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)),
    }
    saved = run.finish(out, "lda", spec, state, verdict)
    return LdaTrainReport(
        **saved,
        base_recipe=base.name,
        classes=classes,
        dim=dim,
        train_accuracy=train_acc,
        holdout_accuracy=held_acc,
    )


def summary(report: LdaTrainReport) -> str:
    return (
        f"wrote {report.weights} ({report.dim}-d projection of {report.base_recipe}; "
        f"accuracy train {report.train_accuracy:.3f}, held-out "
        f"{m.accuracy_text(report.holdout_accuracy)}; {report.seconds:.1f} s)"
    )


METHOD = m.TrainMethod(
    name="lda",
    help="Fit a Fisher discriminant (shrinkage LDA) on a frozen descriptor of labelled "
    "tiles; weights for the effnet-lda-flat recipe.",
    config=LdaTrainConfig,
    inputs="labelled-tiles",
    run=lambda given, out, cfg, device, progress: train_lda(  # no per-step progress
        given.tiles, out, cfg, given.labels, device
    ),
    summary=summary,
)
