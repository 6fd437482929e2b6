"""Seed 001's deep hashing: backbone features -> autoencoder with a sigmoid hidden layer
of q units (the hash), tied decoder weights Theta' = Theta^T, and a classifier on the hash.

Loss = NLL(classes | hash) + ||x - x^||^2 + lambda ||Theta||^2; bits = hidden > 0.5.
The seed writes b' = -b for the decoder bias, but b has q entries and x^ has d, so the
decoder bias b' is a learned d-vector (only the weights are tied). The input x is the
backbone feature divided by its per-dimension maximum on the training tiles, so that the
sigmoid reconstruction can reach it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TiedHashAutoencoder(nn.Module):
    """(n, d) features in [0, 1] -> hash (n, q) in (0, 1), reconstruction (n, d), logits."""

    def __init__(self, in_dim: int, bits: int, n_classes: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.empty(bits, in_dim))
        nn.init.xavier_uniform_(self.theta)
        self.b = nn.Parameter(torch.zeros(bits))
        self.b_dec = nn.Parameter(torch.zeros(in_dim))
        self.classifier = nn.Linear(bits, n_classes)
        self.register_buffer("feature_scale", torch.ones(in_dim))

    def hash(self, features: torch.Tensor) -> torch.Tensor:
        """Raw backbone features (n, d) -> hash activations (n, q) = sigmoid(Theta x + b)."""
        x = (features / self.feature_scale).clamp(0, 1)
        return torch.sigmoid(F.linear(x, self.theta, self.b))

    def forward(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> x (n, d) scaled input, h (n, q), reconstruction (n, d), logits (n, classes)."""
        x = (features / self.feature_scale).clamp(0, 1)
        h = torch.sigmoid(F.linear(x, self.theta, self.b))
        recon = torch.sigmoid(F.linear(h, self.theta.t(), self.b_dec))
        return x, h, recon, self.classifier(h)


def deephash_loss(
    model: TiedHashAutoencoder,
    features: torch.Tensor,
    labels: torch.Tensor,
    weight_decay: float,
    reconstruction: str = "sum",
) -> tuple[torch.Tensor, dict[str, float]]:
    """NLL + reconstruction (squared error summed over the d dims, or their mean with
    reconstruction="mean"; mean over n) + weight_decay * ||Theta||^2."""
    x, _, recon, logits = model(features)
    nll = F.cross_entropy(logits, labels)
    err = (x - recon) ** 2
    rec = (err.sum(dim=1) if reconstruction == "sum" else err.mean(dim=1)).mean()
    l2 = weight_decay * model.theta.pow(2).sum()
    total = nll + rec + l2
    parts = {
        "nll": float(nll.detach()),
        "reconstruction": float(rec.detach()),
        "l2": float(l2.detach()),
    }
    return total, parts
