"""`deephash` (seed 001): hash-layer activations (n, q) in (0, 1) of a trained
backbone + tied autoencoder; the `threshold` encoder turns them into bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import load_parts, run_batched
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.deephash import TiedHashAutoencoder
from cbir.nn.device import resolve_device
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
        name = str(spec["backbone"])
        self.backbone = create_backbone(name)
        self.hasher = TiedHashAutoencoder(
            int(spec["in_dim"]), int(spec["bits"]), len(spec["classes"])
        )
        load_parts(weights, state, {"backbone": self.backbone, "hash": self.hasher})
        self.normalization = backbone_entry(name).normalization
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
        self.hasher.to(self.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="deephash",
            dim=int(spec["bits"]),
            tile_size=tile_size,
            params={"backbone": name, "weights_sha256": sha256_file(Path(weights))},
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, q) float32 hash activations."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.hasher.hash(
                self.backbone(to_tensor(b, self.normalization).to(self.device))
            ),
        )


@register_descriptor("deephash")
def _create_deephash(**params: object) -> DeepHashDescriptor:
    return DeepHashDescriptor(**params)  # type: ignore[arg-type]
