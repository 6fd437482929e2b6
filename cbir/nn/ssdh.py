"""Seed 004's SSDH with the Reliability Object Layer (ROL).

SSDH: feature map -> global average pool -> latent sigmoid layer of q units (the hash)
-> classifier. Loss (Yang et al.'s SSDH): cross-entropy - alpha * mean((h - 0.5)^2)
(pushes activations to 0 / 1) + beta * mean((mean_batch(h) - 0.5)^2) (balances bits).
ROL: a PSP-style segmentation head (pyramid pooling bins 1, 2, 3, 6) gives per-pixel class
probabilities on the last feature map; R = max over non-background classes (class 0 is
background) multiplies the feature map element-wise before pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PSP_BINS = (1, 2, 3, 6)


class PyramidSegHead(nn.Module):
    """(n, c, h, w) -> (n, classes, h, w) logits: pooled context at PSP_BINS, upsampled,
    concatenated with the map, 3x3 conv + BN + ReLU, 1x1 conv to classes."""

    def __init__(self, channels: int, n_seg_classes: int, bins: tuple[int, ...] = PSP_BINS):
        super().__init__()
        branch = max(8, channels // 4)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(channels, branch, 1, bias=False),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + branch * len(bins), branch, 3, padding=1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch, n_seg_classes, 1),
        )

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        size = fmap.shape[-2:]
        context = [
            F.interpolate(b(fmap), size=size, mode="bilinear", align_corners=False)
            for b in self.branches
        ]
        return self.fuse(torch.cat([fmap, *context], dim=1))


def reliability(seg_logits: torch.Tensor) -> torch.Tensor:
    """(n, classes, h, w) logits -> R (n, 1, h, w): per-pixel max softmax probability over
    the non-background classes (class 0 is background)."""
    return F.softmax(seg_logits, dim=1)[:, 1:].amax(dim=1, keepdim=True)


class SSDHHead(nn.Module):
    """Feature map (n, c, h, w) -> hash (n, q) in (0, 1) and class logits; with `rol`,
    also segmentation logits, and the map is weighted by R first."""

    def __init__(self, channels: int, bits: int, n_classes: int, n_seg_classes: int = 0):
        super().__init__()
        self.seg = PyramidSegHead(channels, n_seg_classes) if n_seg_classes else None
        self.latent = nn.Linear(channels, bits)
        self.classifier = nn.Linear(bits, n_classes)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        seg_logits = None
        if self.seg is not None:
            seg_logits = self.seg(fmap)
            fmap = fmap * reliability(seg_logits)
        h = torch.sigmoid(self.latent(fmap.mean(dim=(2, 3))))
        return h, self.classifier(h), seg_logits


def ssdh_loss(
    h: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> torch.Tensor:
    """CE - alpha * mean((h - 0.5)^2) + beta * mean((mean over batch of h - 0.5)^2)."""
    binary = ((h - 0.5) ** 2).mean()
    balance = ((h.mean(dim=0) - 0.5) ** 2).mean()
    return F.cross_entropy(logits, labels) - alpha * binary + beta * balance
