"""`ssdh` (seed 004): latent-layer activations (n, q) in (0, 1) of SSDH (with ROL when
trained with masks); the `threshold` encoder makes the bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import NetworkDescriptor, load_parts, trained_weights
from cbir.files import sha256_file
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.ssdh import SSDHHead
from cbir.specs import DescriptorSpec


@register_descriptor("ssdh", learned=True)
class SSDHDescriptor(NetworkDescriptor):
    """Needs `weights` from `cbir train ssdh`."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        spec, state = trained_weights(weights, "ssdh")
        assert weights is not None
        name = str(spec["backbone"])
        self.backbone = create_backbone(name)
        self.head = SSDHHead(
            self.backbone.map_channels,
            int(spec["bits"]),
            len(spec["classes"]),
            int(spec["n_seg_classes"]),
        )
        load_parts(weights, state, {"backbone": self.backbone, "head": self.head})
        self.normalization = backbone_entry(name).normalization
        self.device = resolve_device(device)
        for_inference(self.backbone, self.device)
        self.head.to(self.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="ssdh",
            dim=int(spec["bits"]),
            tile_size=tile_size,
            params={
                "backbone": name,
                "rol": bool(spec["rol"]),
                "weights_sha256": sha256_file(Path(weights)),
            },
        )

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """Latent activations (b, q) in (0, 1)."""
        return self.head(
            self.backbone.feature_map(to_tensor(tiles, self.normalization, self.device))
        )[0]
