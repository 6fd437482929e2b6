"""DELF (seed 003): dense local features from a convolutional trunk and an attention head.

The trunk is ResNet-50 up to conv4_x (1024 channels, stride 16, receptive field 267 px as
DELF maps it), or `small-dense`, a 5-layer CPU trunk of the same stride for tests and
quick runs. Attention: two 1x1 convolutions, ReLU between, softplus after (scores >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cbir.nn.receptive import RF_PADDING, RF_SIZE, RF_STRIDE
from cbir.nn.torchvision_nets import ResNet50Features
from cbir.nn.weights import WeightsError


@dataclass(frozen=True)
class ReceptiveField:
    """Box of feature (i, j): x in [j * stride - padding, + size) of the network input."""

    size: int
    stride: int
    padding: int


class SmallDenseTrunk(nn.Module):
    """conv5/2, conv5/2, conv3/2, conv3/2, conv3/1 with batch norm and ReLU: stride 16,
    receptive field 69 px, padding 34. (n, 3, h, w) -> (n, 256, ~h/16, ~w/16)."""

    layers = ((5, 2, 32), (5, 2, 64), (3, 2, 128), (3, 2, 128), (3, 1, 256))

    def __init__(self) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for k, s, cout in self.layers:
            mods += [
                nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.features = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @classmethod
    def receptive_field(cls) -> ReceptiveField:
        size, stride, padding = 1, 1, 0
        for k, s, _ in cls.layers:
            size += (k - 1) * stride
            padding += (k // 2) * stride
            stride *= s
        return ReceptiveField(size, stride, padding)


@dataclass(frozen=True)
class DelfTrunkInfo:
    channels: int
    receptive_field: ReceptiveField
    normalization: str  # see cbir.nn.cnn.to_tensor


DELF_TRUNKS: dict[str, DelfTrunkInfo] = {
    "resnet50": DelfTrunkInfo(1024, ReceptiveField(RF_SIZE, RF_STRIDE, RF_PADDING), "imagenet"),
    "small-dense": DelfTrunkInfo(256, SmallDenseTrunk.receptive_field(), "tiles"),
}


def create_delf_trunk(name: str) -> nn.Module:
    if name == "resnet50":
        return ResNet50Features(until="layer3")
    if name == "small-dense":
        return SmallDenseTrunk()
    raise WeightsError(f"unknown DELF trunk {name!r}; valid: {', '.join(DELF_TRUNKS)}")


def dense_features(trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, 3, h, w) normalised images -> (n, c, h', w') dense features."""
    if isinstance(trunk, SmallDenseTrunk):
        return trunk(x)
    return trunk.feature_map(x)


class AttentionHead(nn.Module):
    """1x1 conv (c -> hidden), ReLU, 1x1 conv (hidden -> 1), softplus: (n, c, h, w) ->
    (n, 1, h, w) non-negative scores."""

    def __init__(self, channels: int, hidden: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.conv2(F.relu(self.conv1(f))))


def attention_pool(f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Attention-weighted sum pooling (DELF training): sum_ij a_ij * f_ij / (h * w)
    -> (n, c). Dividing by the map area keeps the scale of the logits independent of the
    image size (the rescaled training images differ in size)."""
    return (f * a).mean(dim=(2, 3))


class DelfNet(nn.Module):
    """Trunk + attention head; `forward` gives dense features and attention scores."""

    def __init__(self, trunk_name: str, hidden: int = 512) -> None:
        super().__init__()
        info = DELF_TRUNKS.get(trunk_name)
        if info is None:
            raise WeightsError(
                f"unknown DELF trunk {trunk_name!r}; valid: {', '.join(DELF_TRUNKS)}"
            )
        self.trunk_name = trunk_name
        self.info = info
        self.trunk = create_delf_trunk(trunk_name)
        self.attention = AttentionHead(info.channels, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, h, w) -> features (n, c, h', w'), attention (n, 1, h', w')."""
        f = dense_features(self.trunk, x)
        return f, self.attention(f)

    def global_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, c) L2-normalised attention-pooled features of the
        L2-normalised local features (a tile-level descriptor from the same network)."""
        f, a = self(x)
        return F.normalize(attention_pool(F.normalize(f, dim=1), a), dim=1)


def seeded_delf(trunk_name: str, seed: int = 0) -> DelfNet:
    """A DelfNet with seeded random weights (no weights file): the same on every call, so an
    index and its queries agree."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DelfNet(trunk_name)
