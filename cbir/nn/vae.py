"""Seed 000's `vae`: a convolutional variational autoencoder on RGB tiles.

Loss = squared reconstruction error + KL(N(mu, sigma) || N(0, 1)), with sigma the log
variance and z = mu + exp(sigma / 2) * eps. The descriptor is mu (deterministic; the
seed's code used a random sample z, which is a bug).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: |log variance| bound of the encoder output.
LOGVAR_LIMIT = 10.0


def to_unit(tiles: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 in [0, 1] (what the decoder reproduces)."""
    return (
        torch.from_numpy(np.array(tiles, copy=not tiles.flags.writeable, order="C"))
        .permute(0, 3, 1, 2)
        .float()
        / 255.0
    )


class TileVAE(nn.Module):
    """`depth` stride-2 conv blocks down to (tile / 2^depth)^2 x 8w, linear to mu and log
    variance (`latent`), and the mirror image back to (3, tile, tile) with a sigmoid."""

    def __init__(
        self, tile_size: int = 224, latent: int = 128, width: int = 32, depth: int = 5
    ) -> None:
        super().__init__()
        if tile_size % (2**depth):
            raise ValueError(f"tile_size {tile_size} must be divisible by 2^{depth}")
        chans = [3] + [min(width * 2**i, 8 * width) for i in range(depth)]
        down: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            down += [nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*down)
        self.side = tile_size // 2**depth
        flat = chans[-1] * self.side * self.side
        self.to_mu = nn.Linear(flat, latent)
        self.to_logvar = nn.Linear(flat, latent)
        self.from_z = nn.Linear(latent, flat)
        up: list[nn.Module] = []
        rev = chans[::-1]
        for i, (cin, cout) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
            up.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1))
            if i < depth - 1:
                up += [nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        self.decoder = nn.Sequential(*up, nn.Sigmoid())
        self.top_channels = chans[-1]
        self.latent = latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, t, t) in [0, 1] -> mu, log variance, each (n, latent)."""
        h = self.encoder(x).flatten(1)
        # A clamped log variance keeps exp(logvar) finite early in training.
        return self.to_mu(h), self.to_logvar(h).clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent) -> (n, 3, t, t) in [0, 1]."""
        h = self.from_z(z).view(-1, self.top_channels, self.side, self.side)
        return self.decoder(h)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mu, log variance; z = mu + exp(logvar / 2) * eps."""
        mu, logvar = self.encode(x)
        eps = (
            torch.randn(mu.shape, generator=generator, device=mu.device)
            if generator is None
            else torch.randn(mu.shape, generator=generator).to(mu.device)
        )
        z = mu + torch.exp(logvar / 2) * eps
        return self.decode(z), mu, logvar


def vae_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL), each summed over a sample and averaged over the batch."""
    n = x.shape[0]
    rec = ((recon - x) ** 2).sum() / n
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / n
    return rec + beta * kl, rec, kl
