"""Training augmentation on (n, 3, h, w) tensors: flips, 90-degree rotations, colour jitter."""

from __future__ import annotations

import torch


def augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
    """Random horizontal/vertical flips, a random multiple of 90 degrees, and per-image
    brightness / contrast / per-channel shifts of about +-`jitter` (in normalised units)."""
    n = x.shape[0]
    out = x.clone()
    flip_h = torch.rand(n, generator=generator) < 0.5
    flip_v = torch.rand(n, generator=generator) < 0.5
    turns = torch.randint(0, 4, (n,), generator=generator)
    out[flip_h] = out[flip_h].flip(3)
    out[flip_v] = out[flip_v].flip(2)
    for k in (1, 2, 3):
        sel = turns == k
        if sel.any():
            out[sel] = torch.rot90(out[sel], k, dims=(2, 3))
    gain = 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    shift = jitter * (2 * torch.rand(n, x.shape[1], 1, 1, generator=generator) - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * gain + mean + shift
