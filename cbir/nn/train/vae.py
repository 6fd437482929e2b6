"""`cbir train vae`: fit the tile VAE (unsupervised) on a folder of tiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from cbir.nn.train import method as m

if TYPE_CHECKING:
    import torch

    from cbir.nn.train.setup import TrainingRun


class VaeTrainConfig(m.TilesConfig):
    latent: Annotated[int, Field(ge=32, le=512, description="Latent size.")] = 128
    epochs: m.Epochs = 40
    batch_size: m.BatchSize = 32
    lr: m.LearningRate = 1e-3
    width: int = 32
    depth: int = 5
    beta: float = 1.0
    #: Fraction held out (per class when the folder is labelled).
    holdout: Annotated[float, Field(ge=0.0, le=0.9, description="Fraction of tiles held out.")] = (
        0.5
    )


class VaeTrainReport(m.TilesReport):
    epochs: int
    first_epoch_loss: float
    last_epoch_loss: float
    holdout_reconstruction_mse: float | None  # per pixel and channel, [0, 1] units


@m.tile_method(VaeTrainConfig, labelled=False)
def train_vae(run: TrainingRun, cfg: VaeTrainConfig, out: Path, tiles_root: Path) -> VaeTrainReport:
    """Train on a split (labels, if any, only stratify it); save weights whose spec lists
    the training tiles."""
    import torch

    from cbir.nn.augment import augment
    from cbir.nn.train.loop import fit, shuffled
    from cbir.nn.vae import TileVAE, to_unit, vae_loss
    from cbir.nn.verdict import judge
    from cbir.slides.tileset import read_tiles

    dev, progress = run.device, run.progress
    train_idx, held_idx = run.train_idx, run.held_idx
    x_all = to_unit(read_tiles(run.data.paths, cfg.tile_size))
    model = TileVAE(cfg.tile_size, cfg.latent, cfg.width, cfg.depth).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        xb = augment(x_all[batch], gen, jitter=0.0).clamp(0, 1).to(dev)  # flips, rotations
        recon, mu, logvar = model(xb)
        return vae_loss(recon, xb, mu, logvar, cfg.beta)[0]

    losses = fit(
        opt,
        cfg.epochs,
        shuffled(train_idx, cfg.batch_size, gen),
        batch_loss,
        progress,
        "train vae",
        before_round=model.train,
    )
    mse = None
    if held_idx:
        model.eval()
        with torch.no_grad():
            errs = []
            for b in torch.tensor(held_idx).split(64):
                xb = x_all[b].to(dev)
                mu, _ = model.encode(xb)
                errs.append(((model.decode(mu) - xb) ** 2).mean(dim=(1, 2, 3)).cpu())
            mse = float(torch.cat(errs).mean())
    spec = run.spec(
        cfg, tile_size=cfg.tile_size, latent=cfg.latent, width=cfg.width, depth=cfg.depth
    )
    verdict = judge(losses[0], losses[-1])  # no labels: the loss alone
    saved = run.finish(out, "vae", spec, model.state_dict(), verdict)
    return VaeTrainReport(
        **saved,
        epochs=cfg.epochs,
        first_epoch_loss=losses[0],
        last_epoch_loss=losses[-1],
        holdout_reconstruction_mse=mse,
    )


def summary(report: VaeTrainReport) -> str:
    mse = report.holdout_reconstruction_mse
    return (
        f"wrote {report.weights} ({report.train_tiles} training tiles, loss "
        f"{report.first_epoch_loss:.1f} -> {report.last_epoch_loss:.1f}, held-out "
        f"reconstruction MSE {'n/a' if mse is None else f'{mse:.4f}'}, "
        f"{report.seconds:.1f} s on {report.device})"
    )


METHOD = m.TrainMethod(
    name="vae",
    help="Train seed 000's tile VAE; its posterior mean mu is the `vae` descriptor.",
    config=VaeTrainConfig,
    inputs="tiles",
    run=m.on_tiles(train_vae),
    summary=summary,
)
