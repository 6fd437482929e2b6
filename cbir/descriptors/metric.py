"""`metric` (seed 002): unit-length 512-d embeddings (compare by L2) from a backbone and
the head trained by `cbir train metric`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.nn.backbones import BACKBONES, create_backbone
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
        self.backbone = create_backbone(str(spec["backbone"]))
        self.head = MetricHead(int(spec["in_dim"]), int(spec["dim"]))
        try:
            self.backbone.load_state_dict(
                {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
            )
            self.head.load_state_dict(
                {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
            )
        except RuntimeError as exc:
            raise WeightsError(f"{weights}: weights do not fit ({exc})") from exc
        self.normalization = BACKBONES[str(spec["backbone"])].normalization
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
        self.head.to(self.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="metric",
            dim=int(spec["dim"]),
            tile_size=tile_size,
            params={
                "backbone": spec["backbone"],
                "loss": spec["loss"],
                "weights_sha256": sha256_file(Path(weights)),
            },
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, 512) float32 unit vectors."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(tiles), self.batch_size):
                x = to_tensor(tiles[i : i + self.batch_size], self.normalization).to(self.device)
                out.append(self.head(self.backbone(x)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


@register_descriptor("metric")
def _create_metric(**params: object) -> MetricDescriptor:
    return MetricDescriptor(**params)  # type: ignore[arg-type]
