"""`deephash` (seed 001): hash-layer activations (n, q) in (0, 1) of a trained
backbone + tied autoencoder; the `threshold` encoder turns them into bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.nn.backbones import BACKBONES, create_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.deephash import TiedHashAutoencoder
from cbir.nn.device import resolve_device
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec


class DeepHashDescriptor:
    """Needs `weights` from `cbir train deephash` (the bits are learned: there is no
    meaningful untrained deep hash)."""

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        if weights is None:
            raise WeightsError("the deephash descriptor needs --weights (cbir train deephash)")
        spec, state = load_weights(weights, "deephash")
        self.backbone = create_backbone(str(spec["backbone"]))
        self.hasher = TiedHashAutoencoder(
            int(spec["in_dim"]), int(spec["bits"]), len(spec["classes"])
        )
        try:
            self.backbone.load_state_dict(
                {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
            )
            self.hasher.load_state_dict(
                {k[len("hash.") :]: v for k, v in state.items() if k.startswith("hash.")}
            )
        except RuntimeError as exc:
            raise WeightsError(f"{weights}: weights do not fit ({exc})") from exc
        self.normalization = BACKBONES[str(spec["backbone"])].normalization
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
        self.hasher.to(self.device).eval()
        self.batch_size = batch_size
        self.spec = DescriptorSpec(
            name="deephash",
            dim=int(spec["bits"]),
            tile_size=tile_size,
            params={"backbone": spec["backbone"], "weights_sha256": sha256_file(Path(weights))},
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, q) float32 hash activations."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(tiles), self.batch_size):
                x = to_tensor(tiles[i : i + self.batch_size], self.normalization).to(self.device)
                out.append(self.hasher.hash(self.backbone(x)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


@register_descriptor("deephash")
def _create_deephash(**params: object) -> DeepHashDescriptor:
    return DeepHashDescriptor(**params)  # type: ignore[arg-type]
