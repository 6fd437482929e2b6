"""Seed 000's scale comparator: two RGB tiles stacked to 6 channels -> conv + batch-norm +
LeakyReLU blocks -> 3 linear layers -> sigmoid = P(same magnification)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbir.nn.cnn import to_tensor


class ScaleComparator(nn.Module):
    """`blocks` stride-2 conv blocks (width doubling to 8w), global average pooling,
    Linear -> LeakyReLU -> Linear -> LeakyReLU -> Linear(1). forward gives logits."""

    def __init__(self, width: int = 24, blocks: int = 4, input_size: int = 224) -> None:
        super().__init__()
        chans = [6] + [min(width * 2**i, 8 * width) for i in range(blocks)]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [
                nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.1),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(chans[-1], 64),
            nn.LeakyReLU(0.1),
            nn.Linear(64, 32),
            nn.LeakyReLU(0.1),
            nn.Linear(32, 1),
        )
        self.input_size = input_size

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """(n, 6, s, s) -> (n,) logits of P(same scale)."""
        return self.head(self.features(pairs)).squeeze(1)


def pair_tensor(a: np.ndarray, b: np.ndarray, input_size: int) -> torch.Tensor:
    """Tiles a, b (n, t, t, 3) uint8 -> (n, 6, s, s) normalised, resized to input_size."""
    x = torch.cat([to_tensor(a), to_tensor(b)], dim=1)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="area")
    return x
