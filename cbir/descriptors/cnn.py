"""`cnn` (seed 000): the trained AlexNet-like trunk, global average pooled -> 64-d."""

from __future__ import annotations

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import NetworkDescriptor, load_parts, weights_or_seed
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import normalise, to_tensor
from cbir.nn.cuda_graphs import graphed
from cbir.nn.device import for_inference, resolve_device
from cbir.specs import DescriptorSpec


@register_descriptor("cnn", learned=True)
class CnnDescriptor(NetworkDescriptor):
    """Tiles -> trunk features (n, out_dim). `weights`: a file from `cbir train cnn`;
    without one the trunk is randomly initialised from RANDOM_INIT_SEED (deterministic,
    untrained)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 64,
        device: str | None = "auto",
        width: int = 48,
        out_dim: int = 64,
    ) -> None:
        spec, state, weights_id = weights_or_seed(weights, "cnn")
        backbone = "alexnet-like"
        if spec is not None:
            width, out_dim = int(spec["width"]), int(spec["out_dim"])
            backbone = str(spec.get("arch", "alexnet-like"))
        self.trunk = create_backbone(backbone, width=width, out_dim=out_dim)
        self.normalization = backbone_entry(backbone).normalization
        if weights is not None and state is not None:
            load_parts(weights, state, {"": self.trunk})
        self.device = resolve_device(device)
        for_inference(self.trunk, self.device)
        self.batch_size = batch_size
        trunk, norm = self.trunk, self.normalization  # not self: no reference cycle
        self.graphs = graphed(lambda x: trunk(normalise(x, norm)), self.device)
        self.weights = weights
        self.spec = DescriptorSpec(
            name="cnn",
            dim=out_dim,
            tile_size=tile_size,
            params={"backbone": backbone, "width": width, "weights_sha256": weights_id},
        )

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        return self.trunk(to_tensor(tiles, self.normalization, self.device))
