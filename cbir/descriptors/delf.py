"""`delf` tile descriptor (seed 003's network, global form): attention-weighted mean of a
tile's L2-normalised local features, L2-normalised -> (n, c) (1024-d for ResNet-50).
Used by the delf recipes for the tile index; local features live in the local stage."""

from __future__ import annotations

import numpy as np

from cbir.delf.extract import load_delf
from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import run_batched
from cbir.nn.cnn import to_tensor
from cbir.nn.device import for_inference, resolve_device
from cbir.specs import DescriptorSpec


@register_descriptor("delf", learned=True)
class DelfGlobalDescriptor:
    """`weights` from `cbir train delf`; without, seeded random weights of `trunk`."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        trunk: str = "resnet50",
        batch_size: int = 16,
        device: str | None = "auto",
    ) -> None:
        self.net, sha = load_delf(weights, trunk)
        self.device = resolve_device(device)
        for_inference(self.net, self.device)
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="delf",
            dim=self.net.info.channels,
            tile_size=tile_size,
            params={"trunk": self.net.trunk_name, "weights_sha256": sha},
        )

    def pooled_from(self, local: object) -> bool:
        """Whether `local` (a LocalStage) runs this same network, so that its forward
        pass at scale 1 also gives this descriptor (cbir.describe uses it then)."""
        extractor = getattr(local, "extractor", None)
        spec = getattr(extractor, "spec", {})
        return (
            spec.get("trunk") == self.net.trunk_name
            and spec.get("weights_sha256") == self.spec.params["weights_sha256"]
            and 1.0 in spec.get("scales", ())
            and self.spec.tile_size <= getattr(extractor, "max_side", 0)
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, c) float32 unit vectors."""
        norm = self.net.info.normalization
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.net.global_descriptor(to_tensor(b, norm, self.device)),
            self.device,
        )
