"""`metric` (seed 002): unit-length 512-d embeddings (compare by L2) from a backbone and
the head trained by `cbir train metric`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import load_parts, run_batched
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import resolve_device
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
        name = str(spec["backbone"])
        self.backbone = create_backbone(name)
        self.head = MetricHead(int(spec["in_dim"]), int(spec["dim"]))
        load_parts(weights, state, {"backbone": self.backbone, "head": self.head})
        self.normalization = backbone_entry(name).normalization
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
        self.head.to(self.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="metric",
            dim=int(spec["dim"]),
            tile_size=tile_size,
            params={
                "backbone": name,
                "loss": spec["loss"],
                "weights_sha256": sha256_file(Path(weights)),
            },
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, 512) float32 unit vectors."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.head(self.backbone(to_tensor(b, self.normalization).to(self.device))),
        )


@register_descriptor("metric")
def _create_metric(**params: object) -> MetricDescriptor:
    return MetricDescriptor(**params)  # type: ignore[arg-type]
