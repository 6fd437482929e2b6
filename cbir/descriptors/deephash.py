"""`deephash` (seed 001): hash-layer activations (n, q) in (0, 1) of a trained
tied autoencoder on a backbone (or a frozen recipe's descriptor); the `threshold`
encoder turns them into bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import load_parts, run_batched
from cbir.files import sha256_file
from cbir.nn.deephash import TiedHashAutoencoder
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec


class DeepHashDescriptor:
    """Needs `weights` from `cbir train deephash` (the bits are learned: there is no
    meaningful untrained deep hash)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        if weights is None:
            raise WeightsError("the deephash descriptor needs --weights (cbir train deephash)")
        spec, state = load_weights(weights, "deephash")
        self.input = HeadInput.from_weights(weights, spec, state, tile_size, device, batch_size)
        self.hasher = TiedHashAutoencoder(
            int(spec["in_dim"]), int(spec["bits"]), len(spec["classes"])
        )
        load_parts(weights, state, {"hash": self.hasher})
        self.hasher.to(self.input.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="deephash",
            dim=int(spec["bits"]),
            tile_size=tile_size,
            params={**self.input.describe_params(), "weights_sha256": sha256_file(Path(weights))},
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, q) float32 hash activations."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.hasher.hash(self.input.features(b)),
            self.input.device,
        )


@register_descriptor("deephash", learned=True)
def _create_deephash(**params: object) -> DeepHashDescriptor:
    return DeepHashDescriptor(**params)  # type: ignore[arg-type]
