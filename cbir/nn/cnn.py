"""Seed 000's `cnn`: an AlexNet-like convolutional trunk trained as a tissue classifier;
the classifier is cut and global average pooling gives a 64-d descriptor."""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from cbir.nn.weights import WeightsError, read_state_dict

#: Per-channel mean and std of H&E tiles (RGB, 0..1) used to normalise the input.
TILE_MEAN = (0.70, 0.55, 0.70)
TILE_STD = (0.18, 0.22, 0.17)


#: ImageNet statistics, for torchvision-pretrained backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: Input normalisations by name: per-channel (mean, std) of RGB in 0..1.
NORMALIZATIONS = {
    "tiles": (TILE_MEAN, TILE_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    # TensorFlow-trained EfficientNet-Lite: (x * 255 - 127) / 128
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}


def to_tensor(
    tiles: np.ndarray, normalization: str = "tiles", device: torch.device | None = None
) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 on `device` (default CPU), normalised
    as NORMALIZATIONS says: H&E tile statistics ("tiles"), ImageNet's ("imagenet",
    torchvision weights) or (x * 255 - 127) / 128 ("lite", EfficientNet-Lite). The
    uint8 tiles go to the device first (a quarter of the bytes of float32) and keep
    their NHWC layout: the result is channels-last."""
    x = host_tiles(tiles)
    if device is not None and device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        x = x.to(device)
    return normalise(x, normalization)


def host_tiles(tiles: np.ndarray) -> torch.Tensor:
    """(n, h, w, 3) uint8 array -> a C-contiguous CPU tensor over it (a copy only when it
    is not contiguous or is read-only: torch wants writable memory)."""
    arr = np.ascontiguousarray(tiles) if tiles.flags.writeable else np.array(tiles, order="C")
    return torch.from_numpy(arr)


def normalise(x: torch.Tensor, normalization: str = "tiles") -> torch.Tensor:
    """(n, h, w, 3) uint8 tensor -> (n, 3, h, w) float32 channels-last on its device,
    normalised as NORMALIZATIONS[normalization] says (to_tensor's device half)."""
    x = x.permute(0, 3, 1, 2).float() / 255.0
    mean, sd = channel_stats(normalization, x.device)
    return (x - mean) / sd


_STATS: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
_STATS_LOCK = threading.Lock()


def channel_stats(normalization: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """NORMALIZATIONS[normalization] as (1, 3, 1, 1) float32 tensors on `device`, made once
    and kept for the process (no host-to-device copy per batch, none inside a CUDA graph
    capture; captured graphs read these very tensors, so they are never replaced)."""
    key = (normalization, device)
    with _STATS_LOCK:
        if key not in _STATS:
            m, sd = NORMALIZATIONS[normalization]
            with torch.inference_mode(False):  # usable in and out of inference mode
                _STATS[key] = (
                    torch.tensor(m, device=device).view(1, 3, 1, 1),
                    torch.tensor(sd, device=device).view(1, 3, 1, 1),
                )
        return _STATS[key]


class AlexNetTrunk(nn.Module):
    """Five conv layers as in AlexNet (11/5/3/3/3 kernels, max-pools after 1, 2 and 5),
    narrower, with batch norm; global average pooling -> (n, out_dim)."""

    def __init__(self, width: int = 48, out_dim: int = 64) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, k: int, s: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(3, w, 11, 4),
            nn.MaxPool2d(3, 2),
            *block(w, 2 * w, 5),
            nn.MaxPool2d(3, 2),
            *block(2 * w, 4 * w, 3),
            *block(4 * w, 4 * w, 3),
            *block(4 * w, out_dim, 3),
            nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = out_dim
        self.map_channels = out_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, out_dim, h', w'), before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, out_dim)."""
        return self.pool(self.features(x)).flatten(1)


class TorchvisionAlexNetTrunk(nn.Module):
    """torchvision's AlexNet `features` (same layers and state_dict keys, so a user's
    pretrained `alexnet-*.pth` loads), a 1x1 conv + batch norm + ReLU to `out_dim`, and
    global average pooling -> (n, out_dim)."""

    def __init__(self, out_dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.reduce = nn.Sequential(
            nn.Conv2d(256, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = out_dim
        self.map_channels = out_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, out_dim, h', w'), before pooling."""
        return self.reduce(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, out_dim)."""
        return self.pool(self.feature_map(x)).flatten(1)

    def load_torchvision(self, path: str) -> None:
        """Copy `features.*` from a torchvision AlexNet state_dict file (weights_only load;
        the classifier keys are ignored)."""
        state = read_state_dict(path)
        wanted = self.features.state_dict()
        found = {
            k[len("features.") :]: v
            for k, v in state.items()
            if isinstance(k, str) and k.startswith("features.")
        }
        missing = sorted(set(wanted) - set(found))
        bad = sorted(k for k in wanted if k in found and found[k].shape != wanted[k].shape)
        if missing or bad:
            raise WeightsError(
                f"{path}: not torchvision AlexNet weights (missing "
                f"{missing[:3]}, wrong shape {bad[:3]})"
            )
        self.features.load_state_dict({k: found[k] for k in wanted})


class TissueClassifier(nn.Module):
    """Trunk + dropout + linear classifier (the part cut off for retrieval)."""

    def __init__(self, trunk: nn.Module, n_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(trunk.out_dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, h, w) -> (n, n_classes) logits."""
        return self.head(self.trunk(x))
