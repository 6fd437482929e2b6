"""`ssdh` (seed 004): latent-layer activations (n, q) in (0, 1) of SSDH (with ROL when
trained with masks); the `threshold` encoder makes the bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import load_parts, run_batched
from cbir.files import sha256_file
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.ssdh import SSDHHead
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec


class SSDHDescriptor:
    """Needs `weights` from `cbir train ssdh`."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        if weights is None:
            raise WeightsError("the ssdh descriptor needs --weights (cbir train ssdh)")
        spec, state = load_weights(weights, "ssdh")
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

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, q) float32 latent activations."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.head(
                self.backbone.feature_map(to_tensor(b, self.normalization, self.device))
            )[0],
            self.device,
        )


@register_descriptor("ssdh", learned=True)
def _create_ssdh(**params: object) -> SSDHDescriptor:
    return SSDHDescriptor(**params)  # type: ignore[arg-type]
