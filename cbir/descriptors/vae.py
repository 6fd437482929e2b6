"""`vae` (seed 000): the mean mu of the tile VAE's posterior (compare by squared L2)."""

from __future__ import annotations

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import NetworkDescriptor, load_parts, weights_or_seed
from cbir.nn.cuda_graphs import graphed
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.vae import TileVAE, to_unit
from cbir.nn.weights import WeightsError
from cbir.specs import DescriptorSpec


@register_descriptor("vae", learned=True)
class VaeDescriptor(NetworkDescriptor):
    """Tiles -> mu (n, latent). `weights`: a file from `cbir train vae`; without one the
    VAE is randomly initialised from RANDOM_INIT_SEED (deterministic, untrained)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        latent: int = 128,
        batch_size: int = 64,
        device: str | None = "auto",
        width: int = 32,
        depth: int = 5,
    ) -> None:
        spec, state, weights_id = weights_or_seed(weights, "vae")
        if spec is not None:
            latent, width, depth = int(spec["latent"]), int(spec["width"]), int(spec["depth"])
            if int(spec["tile_size"]) != tile_size:
                raise WeightsError(
                    f"{weights}: VAE trained on {spec['tile_size']} px tiles, "
                    f"the recipe uses {tile_size}"
                )
        self.model = TileVAE(tile_size, latent, width, depth)
        if weights is not None and state is not None:
            load_parts(weights, state, {"": self.model})
        self.device = resolve_device(device)
        for_inference(self.model, self.device)
        self.batch_size = batch_size
        model = self.model  # not self: no reference cycle
        self.graphs = graphed(
            lambda x: model.encode(x.permute(0, 3, 1, 2).float() / 255.0)[0], self.device
        )
        self.spec = DescriptorSpec(
            name="vae",
            dim=latent,
            tile_size=tile_size,
            params={"width": width, "depth": depth, "weights_sha256": weights_id},
        )

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """The posterior means mu (b, latent)."""
        return self.model.encode(to_unit(tiles).to(self.device))[0]
