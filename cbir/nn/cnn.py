"""Seed 000's `cnn`: an AlexNet-like convolutional trunk trained as a tissue classifier;
the classifier is cut and global average pooling gives a 64-d descriptor."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: Per-channel mean and std of H&E tiles (RGB, 0..1) used to normalise the input.
TILE_MEAN = (0.70, 0.55, 0.70)
TILE_STD = (0.18, 0.22, 0.17)


def to_tensor(tiles: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32, normalised with TILE_MEAN / TILE_STD."""
    x = (
        torch.from_numpy(np.array(tiles, copy=not tiles.flags.writeable, order="C"))
        .permute(0, 3, 1, 2)
        .float()
        / 255.0
    )
    mean = torch.tensor(TILE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TILE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class AlexNetTrunk(nn.Module):
    """Five conv layers as in AlexNet (11/5/3/3/3 kernels, max-pools after 1, 2 and 5),
    narrower, with batch norm; global average pooling -> (n, out_dim)."""

    def __init__(self, width: int = 48, out_dim: int = 64) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, k: int, s: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(3, w, 11, 4),
            nn.MaxPool2d(3, 2),
            *block(w, 2 * w, 5),
            nn.MaxPool2d(3, 2),
            *block(2 * w, 4 * w, 3),
            *block(4 * w, 4 * w, 3),
            *block(4 * w, out_dim, 3),
            nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, out_dim)."""
        return self.pool(self.features(x)).flatten(1)


class TissueClassifier(nn.Module):
    """Trunk + dropout + linear classifier (the part cut off for retrieval)."""

    def __init__(self, trunk: AlexNetTrunk, n_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(trunk.out_dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, n_classes) logits."""
        return self.head(self.trunk(x))
