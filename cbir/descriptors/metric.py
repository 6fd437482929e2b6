"""`metric` (seed 002): unit-length embeddings (compare by L2) from a backbone, or a frozen
recipe's descriptor, and the head trained by `cbir train metric`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import Trained, TrainedDescriptor, load_parts
from cbir.nn.metric import MetricHead


@register_descriptor("metric", learned=True)
class MetricDescriptor(TrainedDescriptor):
    """Needs `weights` from `cbir train metric`."""

    name = "metric"

    def build(self, t: Trained) -> tuple[int, dict[str, Any]]:
        self.input = HeadInput.from_weights(
            t.weights, t.spec, t.state, t.tile_size, t.device, self.batch_size
        )
        self.head = MetricHead(int(t.spec["in_dim"]), int(t.spec["dim"]))
        load_parts(t.weights, t.state, {"head": self.head})
        self.device = self.input.device
        self.head.to(self.device).eval()
        return int(t.spec["dim"]), {**self.input.describe_params(), "loss": t.spec["loss"]}

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Unit-length embeddings (b, dim)."""
        return self.head(self.input.features(tiles))
