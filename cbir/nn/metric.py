"""Seed 002's metric learning: backbone -> dense 512 -> dropout -> dense 512 -> L2 norm,
trained with the semi-hard triplet loss L = max(d(a, p) - d(a, n) + margin, 0) with
online mining, or with cross-entropy for comparison."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MetricHead(nn.Module):
    """(n, d) backbone features -> (n, dim) unit-length embeddings (+ logits for CE)."""

    def __init__(
        self, in_dim: int, dim: int = 512, n_classes: int = 0, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, n_classes) if n_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(self.dropout(F.relu(self.fc1(x)))), dim=1)


def pairwise_sq_dist(e: torch.Tensor) -> torch.Tensor:
    """(n, k) -> (n, n) squared Euclidean distances."""
    sq = (e * e).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(0)


def semi_hard_triplets(
    dist: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Online mining: for every anchor-positive pair (same label, a != p), the negative
    with d(a, p) < d(a, n) < d(a, p) + margin closest to the anchor; pairs with no such
    negative give no triplet. Returns index tensors a, p, n of equal length."""
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    a_idx, p_idx = pos.nonzero(as_tuple=True)
    d_ap = dist[a_idx, p_idx][:, None]  # (pairs, 1)
    d_an = dist[a_idx]  # (pairs, n)
    semi = (~same[a_idx]) & (d_an > d_ap) & (d_an < d_ap + margin)
    masked = torch.where(semi, d_an, torch.full_like(d_an, float("inf")))
    best, n_idx = masked.min(dim=1)
    ok = torch.isfinite(best)
    return a_idx[ok], p_idx[ok], n_idx[ok]


def semi_hard_triplet_loss(
    emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.2
) -> tuple[torch.Tensor, int]:
    """Mean max(d(a, p) - d(a, n) + margin, 0) over mined triplets; (loss, count)."""
    dist = pairwise_sq_dist(emb)
    a, p, n = semi_hard_triplets(dist.detach(), labels, margin)
    if len(a) == 0:
        return emb.sum() * 0.0, 0
    return F.relu(dist[a, p] - dist[a, n] + margin).mean(), len(a)


def augment_image(
    tile: np.ndarray,
    rng: np.random.Generator,
    shift: float = 0.1,
    zoom: float = 0.1,
    rotation: float = 20.0,
) -> np.ndarray:
    """Seed 002's augmentation of one (t, t, 3) uint8 tile: shift, zoom, rotation (degrees)
    and horizontal flip, with reflected borders."""
    t = tile.shape[0]
    angle = rng.uniform(-rotation, rotation)
    scale = rng.uniform(1 - zoom, 1 + zoom)
    m = cv2.getRotationMatrix2D((t / 2, t / 2), angle, scale)
    m[:, 2] += rng.uniform(-shift, shift, 2) * t
    out = cv2.warpAffine(tile, m, (t, t), borderMode=cv2.BORDER_REFLECT_101)
    return out[:, ::-1].copy() if rng.random() < 0.5 else out
