"""`ssdh` (seed 004): latent-layer activations (n, q) in (0, 1) of SSDH (with ROL when
trained with masks); the `threshold` encoder makes the bits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import Trained, TrainedDescriptor, load_parts
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.ssdh import SSDHHead


@register_descriptor("ssdh", learned=True)
class SSDHDescriptor(TrainedDescriptor):
    """Needs `weights` from `cbir train ssdh`."""

    name = "ssdh"

    def build(self, t: Trained) -> tuple[int, dict[str, Any]]:
        name = str(t.spec["backbone"])
        self.backbone = create_backbone(name)
        self.head = SSDHHead(
            self.backbone.map_channels,
            int(t.spec["bits"]),
            len(t.spec["classes"]),
            int(t.spec["n_seg_classes"]),
        )
        load_parts(t.weights, t.state, {"backbone": self.backbone, "head": self.head})
        self.normalization = backbone_entry(name).normalization
        self.device = resolve_device(t.device)
        for_inference(self.backbone, self.device)
        self.head.to(self.device).eval()
        return int(t.spec["bits"]), {"backbone": name, "rol": bool(t.spec["rol"])}

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Latent activations (b, q) in (0, 1)."""
        return self.head(
            self.backbone.feature_map(to_tensor(tiles, self.normalization, self.device))
        )[0]
