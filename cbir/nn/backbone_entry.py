"""What a registered backbone is (`BackboneEntry`): the type that the backbone registry
(backbones.py) and the `timm:<model>` entries (timm_backbone.py) share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cbir.nn.weights import load_strict


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone. `build(**params)` makes the module (randomly initialised);
    `load(module, path)` copies a local checkpoint of `layout` into it."""

    name: str
    build: Callable[..., nn.Module]
    dim: int  # pooled output dim with default params
    map_channels: int  # channels of `feature_map`
    normalization: str  # key of cbir.nn.cnn.NORMALIZATIONS
    layout: str  # checkpoint key layout it loads
    load: Callable[[nn.Module, str], None] = load_strict
    input_size: int = 224
    default_weights: Callable[[], str | None] = field(default=lambda: None)
    requires_weights: str | None = None  # what to install/give when weights are required
    params: tuple[str, ...] = ()  # `build` parameters it takes (e.g. width, out_dim)
