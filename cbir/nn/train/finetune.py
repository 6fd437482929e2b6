"""Joint fine-tuning of a backbone and a head on augmented image batches (after the head
has been trained on frozen features)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from cbir.nn.augment import augment
from cbir.nn.cnn import to_tensor
from cbir.nn.train.loop import fit, sampled
from cbir.nn.train.setup import Run

#: The head's fine-tuning learning rate relative to its first training's (cfg.lr).
HEAD_LR_FACTOR = 0.1
#: Backbone learning rate relative to the head's.
BACKBONE_LR_FACTOR = 0.1


def fine_tune(
    run: Run,
    cfg: Any,
    backbone: nn.Module,
    head_params: Iterable[nn.Parameter],
    batch_loss: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
    tiles: np.ndarray,
    normalization: str,
    sample_batch: Callable[[], np.ndarray],
    geometric: bool = True,
) -> list[float]:
    """`cfg.fine_tune_steps` Adam steps of the head (lr = cfg.lr * HEAD_LR_FACTOR) and the
    backbone (that lr * BACKBONE_LR_FACTOR) on `run`'s device, augmentation seeded from
    `cfg.seed` (`cfg`: a method.HeadConfig with `lr`).

    tiles: (n, t, t, 3) uint8, all of them; sample_batch() -> (b,) indices into tiles;
    batch_loss(images (b, 3, t, t) augmented on `device`, indices) -> scalar loss.
    `geometric=False` skips the flips and rotations (when labels are per pixel).
    Returns the loss of every step.
    """
    lr, device = cfg.lr * HEAD_LR_FACTOR, run.device
    generator = torch.Generator().manual_seed(cfg.seed)
    x_all = to_tensor(tiles, normalization)
    opt = torch.optim.Adam(
        [
            {"params": list(backbone.parameters()), "lr": lr * BACKBONE_LR_FACTOR},
            {"params": list(head_params), "lr": lr},
        ]
    )
    backbone.train()
    for m in backbone.modules():  # batch-norm statistics stay those the head was fitted on
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()

    def step_loss(idx: np.ndarray) -> torch.Tensor:
        xb = x_all[torch.from_numpy(idx)]
        return batch_loss((augment(xb, generator) if geometric else xb).to(device), idx)

    steps, label = cfg.fine_tune_steps, "fine-tune backbone"
    losses = fit(opt, steps, sampled(sample_batch), step_loss, run.progress, label)
    backbone.eval()
    return losses
