"""`timm:<model>` backbones, for users whose machine imports timm: the model is made by
`timm.create_model(<model>, pretrained=False, num_classes=0)` and its weights come only
from `--backbone-weights` (nothing is downloaded)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from cbir.nn.backbone_entry import BackboneEntry
from cbir.nn.weights import WeightsError, read_state_dict

_TIMM_NORMALIZATION = "imagenet"


class TimmBackbone(nn.Module):
    """A timm model as a cbir backbone: forward -> (n, num_features) pooled;
    feature_map -> (n, c, h', w') (ViT tokens without prefix tokens, as a grid)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_dim = int(model.num_features)
        self.map_channels = self.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)
        if f.ndim == 4:
            return f
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        tokens = f[:, prefix:]
        side = int(round(tokens.shape[1] ** 0.5))
        return tokens.transpose(1, 2).reshape(len(f), -1, side, tokens.shape[1] // side)


def _load_timm(model: nn.Module, path: str) -> None:
    assert isinstance(model, TimmBackbone)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("head.")}
    result = model.model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise WeightsError(
            f"{path}: does not fit the timm model (missing {result.missing_keys[:3]})"
        )


@functools.lru_cache(maxsize=8)
def timm_entry(name: str) -> Any:
    """The registry entry of `timm:<model>` (an error when timm does not import)."""

    model_name = name.split(":", 1)[1]
    try:
        import timm
    except Exception as exc:  # ImportError, or timm's own failure without torchvision
        raise WeightsError(
            f"backbone {name!r} needs timm, which does not import here ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); use a built-in backbone"
        ) from None

    def build() -> nn.Module:
        try:
            return TimmBackbone(timm.create_model(model_name, pretrained=False, num_classes=0))
        except Exception as exc:  # unknown model name and the like
            raise WeightsError(f"backbone {name!r}: timm cannot create it ({exc})") from exc

    probe = build()
    return BackboneEntry(
        name,
        build,
        probe.out_dim,
        probe.map_channels,
        _TIMM_NORMALIZATION,
        "timm",
        load=_load_timm,
        requires_weights="give a local checkpoint (--weights of build-index, --backbone-weights "
        "of train; nothing is downloaded)",
    )
