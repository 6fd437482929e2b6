"""`backbone`: frozen features of any registered backbone (cbir.nn.backbones), pooled,
with no training: e.g. ImageNet EfficientNet-Lite0 from its packaged weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cbir.checksum import sha256_file
from cbir.descriptors.base import register_descriptor
from cbir.descriptors.network import run_batched
from cbir.nn.backbones import backbone_entry, backbone_weights_file, loaded_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import resolve_device
from cbir.specs import DescriptorSpec

POOLINGS = ("avg", "gem", "avg+max")
#: Generalised-mean exponent of `gem` pooling.
GEM_P = 3.0


def pool(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, c, h, w) non-negative feature map -> (n, c) ("avg", "gem") or (n, 2c) ("avg+max")."""
    if pooling == "avg":
        return fmap.mean(dim=(2, 3))
    if pooling == "gem":
        return fmap.clamp_min(1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1 / GEM_P)
    return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/90-degree rotations of (n, 3, h, w) square images."""
    rots = [torch.rot90(x, r, dims=(2, 3)) for r in range(4)]
    return rots + [r.flip(3) for r in rots]


class BackboneDescriptor:
    """Tiles -> pooled feature map of a frozen backbone, (n, dim) float32.

    weights: a checkpoint in the backbone's layout (`--weights`); None takes the packaged
    pretrained file (EfficientNet-Lite0) or the seeded random initialisation. tta "d4"
    averages the features of the 8 flips/rotations of each tile (histology has no
    up or down)."""

    def __init__(
        self,
        tile_size: int = 224,
        backbone: str = "efficientnet_lite0",
        weights: str | None = None,
        pooling: str = "avg",
        tta: str = "none",
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        if tta not in ("none", "d4"):
            raise ValueError(f"tta {tta!r}; valid: none, d4")
        torch.manual_seed(0)
        self.device = resolve_device(device)
        path = backbone_weights_file(backbone, weights)
        self.net = loaded_backbone(backbone, path, self.device).eval()
        self.normalization = backbone_entry(backbone).normalization
        self.pooling, self.tta, self.batch_size = pooling, tta, batch_size
        c = int(self.net.map_channels)
        self.spec = DescriptorSpec(
            name="backbone",
            dim=2 * c if pooling == "avg+max" else c,
            tile_size=tile_size,
            params={
                "backbone": backbone,
                "pooling": pooling,
                "tta": tta,
                "weights_sha256": sha256_file(Path(path)) if path else "random-init-seed-0",
            },
        )

    def _features(self, b: np.ndarray) -> torch.Tensor:
        x = to_tensor(b, self.normalization).to(self.device)
        views = dihedral(x) if self.tta == "d4" else [x]
        return torch.stack([pool(self.net.feature_map(v), self.pooling) for v in views]).mean(0)

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, dim) float32."""
        return run_batched(tiles, self.batch_size, self.spec.dim, self._features)


@register_descriptor("backbone")
def _create_backbone(**params: object) -> BackboneDescriptor:
    return BackboneDescriptor(**params)  # type: ignore[arg-type]
