"""`cnn` (seed 000): the trained AlexNet-like trunk, global average pooled -> 64-d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import run_batched
from cbir.files import sha256_file
from cbir.nn.backbones import backbone_entry, create_backbone
from cbir.nn.cnn import normalise, to_tensor
from cbir.nn.cuda_graphs import graphed
from cbir.nn.device import for_inference, resolve_device
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec

#: Seed for the trunk when no weights file is given (a fixed random-feature extractor).
RANDOM_INIT_SEED = 0


class CnnDescriptor:
    """Tiles -> trunk features. `weights`: a file from `cbir train cnn`; without one the
    trunk is randomly initialised from RANDOM_INIT_SEED (deterministic, untrained)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 64,
        device: str | None = "auto",
        width: int = 48,
        out_dim: int = 64,
    ) -> None:
        backbone = "alexnet-like"
        if weights is not None:
            spec, state = load_weights(weights, "cnn")
            width, out_dim = int(spec["width"]), int(spec["out_dim"])
            backbone = str(spec.get("arch", "alexnet-like"))
            weights_id = sha256_file(Path(weights))
        else:
            torch.manual_seed(RANDOM_INIT_SEED)
            weights_id = f"random-init-seed-{RANDOM_INIT_SEED}"
        self.trunk = create_backbone(backbone, width=width, out_dim=out_dim)
        self.normalization = backbone_entry(backbone).normalization
        if weights is not None:
            try:
                self.trunk.load_state_dict(state)
            except RuntimeError as exc:
                raise WeightsError(f"{weights}: weights do not fit the cnn trunk ({exc})") from exc
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

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, out_dim) float32."""
        return run_batched(
            tiles,
            self.batch_size,
            self.spec.dim,
            lambda b: self.trunk(to_tensor(b, self.normalization, self.device)),
            self.device,
            self.graphs,
        )


@register_descriptor("cnn", learned=True)
def _create_cnn(**params: object) -> CnnDescriptor:
    return CnnDescriptor(**params)  # type: ignore[arg-type]
