"""`metric` (seed 002): unit-length embeddings (compare by L2) from a backbone, or a frozen
recipe's descriptor, and the head trained by `cbir train metric`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import NetworkDescriptor, load_parts, trained_weights
from cbir.files import sha256_file
from cbir.nn.metric import MetricHead
from cbir.specs import DescriptorSpec


@register_descriptor("metric", learned=True)
class MetricDescriptor(NetworkDescriptor):
    """Needs `weights` from `cbir train metric`."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        spec, state = trained_weights(weights, "metric")
        assert weights is not None
        self.input = HeadInput.from_weights(weights, spec, state, tile_size, device, batch_size)
        self.head = MetricHead(int(spec["in_dim"]), int(spec["dim"]))
        load_parts(weights, state, {"head": self.head})
        self.head.to(self.input.device).eval()
        self.device = self.input.device
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="metric",
            dim=int(spec["dim"]),
            tile_size=tile_size,
            params={
                **self.input.describe_params(),
                "loss": spec["loss"],
                "weights_sha256": sha256_file(Path(weights)),
            },
        )

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Unit-length embeddings (b, dim)."""
        return self.head(self.input.features(tiles))
