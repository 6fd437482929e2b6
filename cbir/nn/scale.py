"""Seed 000's scale comparator: two RGB tiles stacked to 6 channels -> conv + batch-norm +
LeakyReLU blocks -> 3 linear layers -> sigmoid = P(same magnification)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbir.nn.cnn import to_tensor


class ScaleComparator(nn.Module):
    """P(same magnification) of two tiles given as one (n, 6, s, s) pair tensor.

    `blocks` stride-2 conv + batch-norm + LeakyReLU blocks (width doubling to 8w), global
    average pooling, then Linear -> LeakyReLU -> Linear -> LeakyReLU -> Linear(1).
    arch="stacked" (seed 000): the blocks see all 6 channels at once.
    arch="siamese": the same blocks see each tile's 3 channels; the head gets
    [fa + fb, fa * fb, |fa - fb|]. On the real slides here "stacked" stayed at chance
    (held-out accuracy 0.51) while "siamese" learned, so it is the default.
    """

    def __init__(
        self, width: int = 24, blocks: int = 4, input_size: int = 112, arch: str = "siamese"
    ) -> None:
        super().__init__()
        if arch not in ("stacked", "siamese"):
            raise ValueError(f"arch must be 'stacked' or 'siamese', not {arch!r}")
        self.arch = arch
        chans = [6 if arch == "stacked" else 3] + [
            min(width * 2**i, 8 * width) for i in range(blocks)
        ]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [
                nn.Conv2d(cin, cout, 3, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.1),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        head_in = chans[-1] * (1 if arch == "stacked" else 3)
        self.head = nn.Sequential(
            nn.Linear(head_in, 64),
            nn.LeakyReLU(0.1),
            nn.Linear(64, 32),
            nn.LeakyReLU(0.1),
            nn.Linear(32, 1),
        )
        self.input_size = input_size

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """(n, 6, s, s) -> (n,) logits of P(same scale)."""
        if self.arch == "stacked":
            return self.head(self.features(pairs)).squeeze(1)
        return self.compare(self.embed(pairs[:, :3]), self.embed(pairs[:, 3:]))

    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Siamese only: (n, 3, s, s) -> (n, c) features of single tiles (cacheable)."""
        return self.features(tiles)

    def compare(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """Siamese only: features (n, c), (n, c) -> (n,) logits of P(same scale)."""
        return self.head(torch.cat([fa + fb, fa * fb, (fa - fb).abs()], dim=1)).squeeze(1)


def pair_tensor(a: np.ndarray, b: np.ndarray, input_size: int) -> torch.Tensor:
    """Tiles a, b (n, t, t, 3) uint8 -> (n, 6, s, s) normalised, resized to input_size."""
    x = torch.cat([to_tensor(a), to_tensor(b)], dim=1)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="area")
    return x
