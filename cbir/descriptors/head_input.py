"""The input of a trained head (deephash, metric): the pooled output of a registered
backbone (weights prefix "backbone.", fine-tunable), or the descriptor of a frozen recipe
(`base_recipe`, e.g. effnet-d4-flat's multi-block, 8-view ImageNet features) shifted and
scaled per dimension on the training tiles (weights prefix "input.", spec
"base_descriptor")."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cbir.descriptors import check_base
from cbir.descriptors.base import Descriptor, create_descriptor
from cbir.descriptors.network import load_parts
from cbir.nn.backbones import backbone_entry, create_backbone, loaded_backbone
from cbir.nn.cnn import to_tensor
from cbir.nn.device import resolve_device
from cbir.nn.weights import WeightsError

#: "standard": (x - mean) / sd; "minmax": (x - min) / (max - min), in [0, 1] on training.
Scaling = Literal["standard", "minmax"]


def base_descriptor(
    base: dict[str, Any], tile_size: int, device: str | None, batch_size: int | None = None
) -> Descriptor:
    """Rebuild a frozen descriptor from its stored spec ({"name", "params"})."""
    from cbir.descriptors import is_learned

    params = dict(base.get("params", {}))
    if is_learned(base["name"]):
        params["device"] = device
        if batch_size is not None:
            params["batch_size"] = batch_size
    return create_descriptor(base["name"], tile_size=tile_size, **params)


class HeadInput:
    """Tiles -> the (n, in_dim) float32 features a head reads, on `device`."""

    def __init__(
        self,
        device: torch.device,
        backbone: str | None = None,
        net: nn.Module | None = None,
        base: Descriptor | None = None,
        base_spec: dict[str, Any] | None = None,
        base_recipe: str | None = None,
        batch_size: int = 32,
    ) -> None:
        self.device, self.batch_size, self.base_recipe = device, batch_size, base_recipe
        self.backbone_name, self.net, self.base, self.base_spec = backbone, net, base, base_spec
        self.normalization = backbone_entry(backbone).normalization if backbone else ""
        self.shift: torch.Tensor | None = None  # (in_dim,), base descriptors only
        self.scale: torch.Tensor | None = None

    @classmethod
    def for_training(
        cls,
        backbone: str,
        backbone_weights: str | None,
        base_recipe: str | None,
        device: torch.device,
    ) -> HeadInput:
        """A backbone from its weights (None: packaged or seeded random), or, with
        `base_recipe`, that recipe's frozen descriptor."""
        if base_recipe is None:
            return cls(device, backbone, loaded_backbone(backbone, backbone_weights, device))
        from cbir.recipes import load_recipe

        recipe = load_recipe(base_recipe)
        spec = recipe.descriptor.model_dump()
        base = base_descriptor(spec, recipe.tiling.tile_size, str(device))
        check_base(recipe.name, base)
        return cls(device, base=base, base_spec=spec, base_recipe=recipe.name)

    @classmethod
    def from_weights(
        cls,
        weights: str,
        spec: dict[str, Any],
        state: dict[str, torch.Tensor],
        tile_size: int,
        device: str | None,
        batch_size: int,
    ) -> HeadInput:
        """The input a weights file was trained on, loaded from it."""
        dev = resolve_device(device)
        if "base_descriptor" not in spec:
            name = str(spec["backbone"])
            net = create_backbone(name)
            load_parts(weights, state, {"backbone": net})
            return cls(dev, name, net.to(dev).eval(), batch_size=batch_size)
        base = base_descriptor(spec["base_descriptor"], tile_size, device, batch_size)
        out = cls(dev, base=base, base_spec=spec["base_descriptor"], batch_size=batch_size)
        try:
            out.shift, out.scale = state["input.shift"].to(dev), state["input.scale"].to(dev)
        except KeyError as exc:
            raise WeightsError(f"{weights}: no input scaling for its base descriptor") from exc
        if out.shift.shape != (base.spec.dim,):
            raise WeightsError(f"{weights}: input scaling does not fit its base descriptor")
        return out

    @property
    def tile_size(self) -> int | None:
        """The base descriptor's tile size (None: a backbone takes any)."""
        return None if self.base is None else self.base.spec.tile_size

    def raw(self, tiles: np.ndarray) -> torch.Tensor:
        """(n, t, t, 3) uint8 -> (n, in_dim) float32 unscaled features on the device."""
        if self.base is not None:
            return torch.from_numpy(self.base.describe(tiles)).to(self.device)
        assert self.net is not None
        self.net.eval()
        with torch.no_grad():
            return torch.cat(
                [
                    self.net(
                        to_tensor(tiles[i : i + self.batch_size], self.normalization, self.device)
                    ).float()
                    for i in range(0, len(tiles), self.batch_size)
                ]
            )

    def fit_scaling(self, x_train: torch.Tensor, scaling: Scaling) -> None:
        """Per-dimension shift and scale from (n, in_dim) raw training features (base
        descriptors only; a backbone's features go to the head as they are)."""
        if self.base is None:
            return
        if scaling == "standard":
            shift, spread = x_train.mean(0), x_train.std(0)
        else:
            shift, spread = x_train.amin(0), x_train.amax(0) - x_train.amin(0)
        self.shift, self.scale = shift, torch.where(spread > 1e-6, spread, torch.ones_like(spread))

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (n, in_dim) features -> the head's input."""
        if self.shift is None or self.scale is None:
            return x
        return (x - self.shift) / self.scale

    def features(self, tiles: np.ndarray) -> torch.Tensor:
        """(n, t, t, 3) uint8 -> (n, in_dim) float32 head input on the device."""
        return self.scaled(self.raw(tiles))

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to save, prefixed ("backbone." or "input.")."""
        if self.base is None:
            assert self.net is not None
            return {f"backbone.{k}": v for k, v in self.net.state_dict().items()}
        assert self.shift is not None and self.scale is not None
        return {"input.shift": self.shift.cpu(), "input.scale": self.scale.cpu()}

    def spec(self) -> dict[str, Any]:
        """Spec fields naming the input: the backbone, or the base descriptor."""
        if self.base is None:
            return {"backbone": self.backbone_name}
        return {
            "backbone": None,
            "base_recipe": self.base_recipe,
            "base_descriptor": self.base_spec,
        }

    def describe_params(self) -> dict[str, Any]:
        """What a head descriptor's spec params say of its input."""
        if self.base is None:
            return {"backbone": self.backbone_name}
        return {"base": self.base.spec.model_dump()}
