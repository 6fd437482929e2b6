"""Backbones: torchvision key layout (so local torchvision files load), output sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cbir.nn.backbones import BACKBONES, create_backbone, load_torchvision_weights
from cbir.nn.weights import WeightsError

# A few keys of torchvision's own state_dicts (torchvision.models.vgg19 / resnet50).
TORCHVISION_KEYS = {
    "vgg16": ["features.0.weight", "features.28.bias", "classifier.0.weight", "classifier.3.bias"],
    "vgg19": ["features.0.weight", "features.34.weight", "classifier.3.weight"],
    "resnet50": [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.weight",
    ],
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_torchvision_key_names(name: str) -> None:
    keys = set(create_backbone(name).state_dict())
    assert set(TORCHVISION_KEYS[name]) <= keys


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_output_dim(name: str) -> None:
    model = create_backbone(name).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, BACKBONES[name].dim)


def test_local_torchvision_file_loads_and_head_is_ignored(tmp_path: Path) -> None:
    model = create_backbone("resnet50")
    state = {
        k: torch.randn_like(v) if v.dtype.is_floating_point else v
        for k, v in model.state_dict().items()
    }
    state["fc.weight"] = torch.randn(1000, 2048)  # torchvision's head, not ours
    torch.save(state, tmp_path / "resnet50-local.pth")
    fresh = create_backbone("resnet50")
    load_torchvision_weights(fresh, str(tmp_path / "resnet50-local.pth"))
    torch.testing.assert_close(fresh.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])
    with pytest.raises(WeightsError, match="does not fit"):
        load_torchvision_weights(create_backbone("vgg16"), str(tmp_path / "resnet50-local.pth"))
