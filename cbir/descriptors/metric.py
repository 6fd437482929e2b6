"""`metric` (seed 002): unit-length embeddings (compare by L2) from a backbone, or a frozen
recipe's descriptor, and the head trained by `cbir train metric`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import HeadInput
from cbir.descriptors.network import load_parts, run_batched
from cbir.files import sha256_file
from cbir.nn.metric import MetricHead
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec


class MetricDescriptor:
    """Needs `weights` from `cbir train metric`."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        if weights is None:
            raise WeightsError("the metric descriptor needs --weights (cbir train metric)")
        spec, state = load_weights(weights, "metric")
        self.input = HeadInput.from_weights(weights, spec, state, tile_size, device, batch_size)
        self.head = MetricHead(int(spec["in_dim"]), int(spec["dim"]))
        load_parts(weights, state, {"head": self.head})
        self.head.to(self.input.device).eval()
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

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, dim) float32 unit vectors."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.head(self.input.features(b)),
            self.input.device,
        )


@register_descriptor("metric", learned=True)
def _create_metric(**params: object) -> MetricDescriptor:
    return MetricDescriptor(**params)  # type: ignore[arg-type]
