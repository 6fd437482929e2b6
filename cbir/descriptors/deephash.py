"""`deephash` (seed 001): hash-layer activations (n, q) in (0, 1) of a trained
tied autoencoder on a backbone (or a frozen recipe's descriptor); the `threshold`
encoder turns them into bits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import Trained, TrainedDescriptor, load_parts
from cbir.nn.deephash import TiedHashAutoencoder


@register_descriptor("deephash", learned=True)
class DeepHashDescriptor(TrainedDescriptor):
    """Needs `weights` from `cbir train deephash` (the bits are learned: there is no
    meaningful untrained deep hash)."""

    name = "deephash"

    def build(self, t: Trained) -> tuple[int, dict[str, Any]]:
        self.input = HeadInput.from_weights(
            t.weights, t.spec, t.state, t.tile_size, t.device, self.batch_size
        )
        self.hasher = TiedHashAutoencoder(
            int(t.spec["in_dim"]), int(t.spec["bits"]), len(t.spec["classes"])
        )
        load_parts(t.weights, t.state, {"hash": self.hasher})
        self.device = self.input.device
        self.hasher.to(self.device).eval()
        return int(t.spec["bits"]), self.input.describe_params()

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Hash activations (b, q) in (0, 1)."""
        return self.hasher.hash(self.input.features(tiles))
