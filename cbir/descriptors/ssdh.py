"""`ssdh` (seed 004): latent-layer activations (n, q) in (0, 1) of SSDH (with ROL when
trained with masks); the `threshold` encoder makes the bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.nn.backbones import BACKBONES, MAP_CHANNELS, create_backbone, feature_map
from cbir.nn.cnn import to_tensor
from cbir.nn.device import resolve_device
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
            MAP_CHANNELS[name], int(spec["bits"]), len(spec["classes"]), int(spec["n_seg_classes"])
        )
        try:
            self.backbone.load_state_dict(
                {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
            )
            self.head.load_state_dict(
                {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
            )
        except RuntimeError as exc:
            raise WeightsError(f"{weights}: weights do not fit ({exc})") from exc
        self.normalization = BACKBONES[name].normalization
        self.device = resolve_device(device)
        self.backbone.to(self.device).eval()
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
        out = []
        with torch.inference_mode():
            for i in range(0, len(tiles), self.batch_size):
                x = to_tensor(tiles[i : i + self.batch_size], self.normalization).to(self.device)
                out.append(self.head(feature_map(self.backbone, x))[0].float().cpu().numpy())
        if not out:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate(out).astype(np.float32)


@register_descriptor("ssdh")
def _create_ssdh(**params: object) -> SSDHDescriptor:
    return SSDHDescriptor(**params)  # type: ignore[arg-type]
