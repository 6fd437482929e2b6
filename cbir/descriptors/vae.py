"""`vae` (seed 000): the mean mu of the tile VAE's posterior (compare by squared L2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import run_batched
from cbir.files import sha256_file
from cbir.nn.cuda_graphs import graphed
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.vae import TileVAE, to_unit
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec

RANDOM_INIT_SEED = 0


class VaeDescriptor:
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
        if weights is not None:
            spec, state = load_weights(weights, "vae")
            latent, width, depth = int(spec["latent"]), int(spec["width"]), int(spec["depth"])
            if int(spec["tile_size"]) != tile_size:
                raise WeightsError(
                    f"{weights}: VAE trained on {spec['tile_size']} px tiles, "
                    f"the recipe uses {tile_size}"
                )
            weights_id = sha256_file(Path(weights))
        else:
            torch.manual_seed(RANDOM_INIT_SEED)
            weights_id = f"random-init-seed-{RANDOM_INIT_SEED}"
        self.model = TileVAE(tile_size, latent, width, depth)
        if weights is not None:
            try:
                self.model.load_state_dict(state)
            except RuntimeError as exc:
                raise WeightsError(f"{weights}: weights do not fit the VAE ({exc})") from exc
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

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, latent) float32 posterior means."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.model.encode(to_unit(b).to(self.device))[0],
            self.device,
            self.graphs,
        )


@register_descriptor("vae", learned=True)
def _create_vae(**params: object) -> VaeDescriptor:
    return VaeDescriptor(**params)  # type: ignore[arg-type]
