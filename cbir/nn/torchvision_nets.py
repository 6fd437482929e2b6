"""VGG and ResNet-50 in plain PyTorch with torchvision's state_dict key names, so a
user's local torchvision weight file (`vgg19-*.pth`, `resnet50-*.pth`) loads; nothing is
downloaded. Each maps (n, 3, 224, 224) ImageNet-normalised images to (n, dim) features
and has `feature_map` for its last convolutional map.
"""

from __future__ import annotations

import torch
from torch import nn

#: torchvision's VGG configurations: conv widths, "M" a max pool.
_VGG_CFG = {
    "vgg16": "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M".split(),
    "vgg19": "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M".split(),
}


class VGGFeatures(nn.Module):
    """torchvision VGG without its last layer: features -> avgpool(7) -> fc6 -> fc7,
    giving the 4096-d fc7 activation (seed 001 uses VGG-19's)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG_CFG[name]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(  # torchvision indices 0..5; 6 (1000 classes) dropped
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
        self.out_dim = 4096
        self.map_channels = 512

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, 512, h/32, w/32), the last conv block after its max-pool."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class Bottleneck(nn.Module):
    """torchvision ResNet bottleneck (expansion 4), same attribute names."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50Features(nn.Module):
    """torchvision ResNet-50 without `fc`: global average pooled 2048-d features.
    `until="layer3"` stops after conv4_x (1024-d, as DELF uses)."""

    def __init__(self, until: str = "layer4") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2) if until == "layer4" else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 2048 if until == "layer4" else 1024
        self.map_channels = self.out_dim

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, map_channels, h/32, w/32) (h/16, w/16 until layer3)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(x) if self.layer4 is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.feature_map(x)).flatten(1)
