"""`cbir train ssdh [--rol --masks DIR]`: seed 004's hashing head on a frozen backbone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from cbir.errors import CbirError
from cbir.nn.train import method as m

if TYPE_CHECKING:
    import torch

    from cbir.nn.train.setup import TrainingRun


class SSDHTrainConfig(m.HeadConfig):
    bits: Annotated[int, Field(ge=8, le=256, description="Latent bits q.")] = 24
    rol: Annotated[
        bool,
        Field(
            description="Reliability Object Layer; needs --masks (without them there is "
            "nothing to train its segmentation head on: refused)."
        ),
    ] = False
    masks: Annotated[
        str | None,
        Field(
            description="Folder of label images (class id per pixel, 0 = background), same "
            "relative names as the tiles.",
            json_schema_extra=m.A_FOLDER,
        ),
    ] = None
    epochs: m.Epochs = 300
    lr: float = 3e-3
    alpha: float = 1.0
    beta: float = 1.0
    fine_tune_batch: int = 32


class SSDHTrainReport(m.TilesReport):
    bits: int
    rol: bool
    first_loss: float
    last_loss: float
    holdout_accuracy: float | None
    bit_statistics: dict[str, float]


def load_masks(
    mask_root: Path, tile_paths: list[str], tiles_root: Path, size: tuple[int, int]
) -> torch.Tensor:
    """Label images (class id per pixel, 0 = background) for each tile, found under
    `mask_root` by the tile's path relative to `tiles_root` (any image suffix), resized
    (nearest) to the feature map -> (n, h, w) int64."""
    import cv2
    import torch

    out = []
    for p in tile_paths:
        rel = Path(p).relative_to(tiles_root.resolve()).with_suffix("")
        found = sorted((mask_root / rel.parent).glob(rel.name + ".*"))
        if not found:
            raise CbirError(f"{mask_root}: no mask for tile {rel} (needed by --rol)")
        mask = cv2.imread(str(found[0]), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise CbirError(f"{found[0]}: unreadable mask image")
        out.append(cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
    return torch.from_numpy(np.stack(out).astype(np.int64))


@m.tile_method(SSDHTrainConfig)
def train_ssdh(
    run: TrainingRun, cfg: SSDHTrainConfig, out: Path, tiles_root: Path
) -> SSDHTrainReport:
    import torch
    from torch.nn import functional as F

    from cbir.encoders.bits import bit_statistics
    from cbir.nn.backbones import backbone_entry, loaded_backbone
    from cbir.nn.cnn import to_tensor
    from cbir.nn.ssdh import SSDHHead, ssdh_loss
    from cbir.nn.train.finetune import fine_tune
    from cbir.nn.train.loop import fit, whole
    from cbir.nn.verdict import judge
    from cbir.nn.weights import prefixed_state
    from cbir.slides.tileset import read_tiles

    if cfg.rol and cfg.masks is None:
        raise CbirError("--rol needs --masks (label images); without masks train plain SSDH")
    dev, progress, classes, data = run.device, run.progress, run.classes, run.data
    train_idx, held_idx = run.train_idx, run.held_idx
    y = torch.from_numpy(run.y)
    backbone = loaded_backbone(cfg.backbone, cfg.backbone_weights, dev).eval()
    norm = backbone_entry(cfg.backbone).normalization
    tiles = read_tiles(data.paths, cfg.tile_size)
    with torch.inference_mode():
        maps = torch.cat(
            [
                backbone.feature_map(to_tensor(tiles[i : i + 32], norm).to(dev)).cpu()
                for i in range(0, len(tiles), 32)
            ]
        )
    masks, n_seg = None, 0
    if cfg.rol:
        masks = load_masks(Path(cfg.masks), data.paths, Path(tiles_root), tuple(maps.shape[-2:]))
        n_seg = int(masks.max()) + 1
    head = SSDHHead(backbone.map_channels, cfg.bits, len(classes), n_seg).to(dev)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    xm, ym = maps[train_idx].to(dev), y[train_idx].to(dev)

    def full_batch_loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h, logits, seg = head(batch[0])
        loss = ssdh_loss(h, logits, batch[1], cfg.alpha, cfg.beta)
        if seg is not None and masks is not None:
            loss = loss + F.cross_entropy(seg, masks[train_idx].to(dev))
        return loss

    losses = fit(
        opt,
        cfg.epochs,
        whole((xm, ym), len(train_idx)),
        full_batch_loss,
        progress,
        "train ssdh" + (" + rol" if cfg.rol else ""),
        before_round=head.train,
    )
    if cfg.fine_tune_steps:
        rng = np.random.default_rng(cfg.seed)
        y_dev = y.to(dev)

        def sample() -> np.ndarray:
            return rng.choice(train_idx, min(cfg.fine_tune_batch, len(train_idx)), replace=False)

        def batch_loss(xb: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            # geometric augmentation would misalign the masks: ROL fine-tunes without it
            h, logits, seg = head(backbone.feature_map(xb))
            sel = torch.from_numpy(idx).to(dev)
            loss = ssdh_loss(h, logits, y_dev[sel], cfg.alpha, cfg.beta)
            if seg is not None and masks is not None:
                loss = loss + F.cross_entropy(seg, masks.to(dev)[sel])
            return loss

        head.train()
        losses += fine_tune(
            run,
            cfg,
            backbone,
            head.parameters(),
            batch_loss,
            tiles,
            norm,
            sample,
            geometric=not cfg.rol,
        )
        with torch.inference_mode():
            maps = torch.cat(
                [
                    backbone.feature_map(to_tensor(tiles[i : i + 32], norm).to(dev)).cpu()
                    for i in range(0, len(tiles), 32)
                ]
            )
    head.eval()
    eval_idx = held_idx or train_idx
    with torch.no_grad():
        h, logits, _ = head(maps[eval_idx].to(dev))
    acc = float((logits.argmax(1).cpu() == y[eval_idx]).float().mean()) if held_idx else None
    stats = bit_statistics((h.cpu() > 0.5).numpy())
    state = prefixed_state(backbone=backbone.state_dict(), head=head.state_dict())
    spec = run.spec(
        cfg,
        fine_tuned=bool(cfg.fine_tune_steps),
        backbone=cfg.backbone,
        bits=cfg.bits,
        rol=cfg.rol,
        n_seg_classes=n_seg,
        tile_size=cfg.tile_size,
    )
    verdict = judge(losses[0], losses[-1], acc, run.chance, stats, cfg.bits, len(eval_idx))
    saved = run.finish(out, "ssdh", spec, state, verdict)
    return SSDHTrainReport(
        **saved,
        bits=cfg.bits,
        rol=cfg.rol,
        first_loss=losses[0],
        last_loss=losses[-1],
        holdout_accuracy=acc,
        bit_statistics=stats,
    )


def summary(report: SSDHTrainReport) -> str:
    st = report.bit_statistics
    return (
        f"wrote {report.weights} ({report.bits} bits{' + ROL' if report.rol else ''}"
        f"; loss {report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
        f"{st['bit_balance']:.3f}; {report.seconds:.1f} s)"
    )


METHOD = m.TrainMethod(
    name="ssdh",
    help="Train seed 004's SSDH (latent sigmoid layer before the classifier), optionally "
    "with the ROL; weights for the ssdh<q>-ivf recipes.",
    config=SSDHTrainConfig,
    inputs="labelled-tiles",
    run=m.on_tiles(train_ssdh),
    summary=summary,
)
