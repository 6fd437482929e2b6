"""`lda`: a frozen base descriptor projected by a trained Fisher discriminant
(`cbir train lda`): ((x - mean) / scale) @ W -> (n, classes - 1) float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.descriptors.base import register_descriptor
from cbir.descriptors.head_input import base_descriptor
from cbir.files import sha256_file
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec


@register_descriptor("lda", learned=True)
class LdaDescriptor:
    """Needs `weights` from `cbir train lda`; the base descriptor is rebuilt from the
    config stored in them."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        device: str | None = "auto",
        batch_size: int | None = None,
    ) -> None:
        if weights is None:
            raise WeightsError("the lda descriptor needs --weights (cbir train lda)")
        spec, state = load_weights(weights, "lda")
        if int(spec["tile_size"]) != tile_size:
            raise WeightsError(
                f"{weights}: LDA fitted on {spec['tile_size']} px tiles, not {tile_size}"
            )
        self.base = base_descriptor(spec["base_descriptor"], tile_size, device, batch_size)
        self.mean = state["mean"].numpy()
        self.scale = state["scale"].numpy()
        self.projection = state["projection"].numpy()
        if self.mean.shape != (self.base.spec.dim,) or len(self.projection) != len(self.mean):
            raise WeightsError(f"{weights}: projection does not fit its base descriptor")
        self.spec = DescriptorSpec(
            name="lda",
            dim=int(self.projection.shape[1]),
            tile_size=tile_size,
            params={
                "base": self.base.spec.model_dump(),
                "weights_sha256": sha256_file(Path(weights)),
            },
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, classes - 1) float32."""
        x = self.base.describe(tiles)
        return np.ascontiguousarray(((x - self.mean) / self.scale) @ self.projection, np.float32)
