"""`deephash` (seed 001): hash-layer activations (n, q) in (0, 1) of a trained
tied autoencoder on a backbone (or a frozen recipe's descriptor); the `threshold`
encoder turns them into bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import NetworkDescriptor, load_parts, trained_weights
from cbir.files import sha256_file
from cbir.nn.deephash import TiedHashAutoencoder
from cbir.specs import DescriptorSpec


@register_descriptor("deephash", learned=True)
class DeepHashDescriptor(NetworkDescriptor):
    """Needs `weights` from `cbir train deephash` (the bits are learned: there is no
    meaningful untrained deep hash)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        spec, state = trained_weights(weights, "deephash")
        assert weights is not None
        self.input = HeadInput.from_weights(weights, spec, state, tile_size, device, batch_size)
        self.hasher = TiedHashAutoencoder(
            int(spec["in_dim"]), int(spec["bits"]), len(spec["classes"])
        )
        load_parts(weights, state, {"hash": self.hasher})
        self.hasher.to(self.input.device).eval()
        self.device = self.input.device
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="deephash",
            dim=int(spec["bits"]),
            tile_size=tile_size,
            params={**self.input.describe_params(), "weights_sha256": sha256_file(Path(weights))},
        )

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Hash activations (b, q) in (0, 1)."""
        return self.hasher.hash(self.input.features(tiles))
