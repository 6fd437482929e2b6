"""The tile pipeline of a recipe: descriptor -> encoder, with the state stored in a bundle."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cbir.descriptors import create_descriptor
from cbir.encoders import create_encoder
from cbir.errors import BundleError
from cbir.recipes import Recipe
from cbir.specs import DescriptorSpec, EncoderSpec


class TilePipeline:
    """Tiles -> descriptors -> codes, as a recipe says."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.descriptor = create_descriptor(
            recipe.descriptor.name, tile_size=recipe.tiling.tile_size, **recipe.descriptor.params
        )
        self.encoder = create_encoder(
            recipe.encoder.name, input_dim=self.descriptor.spec.dim, **recipe.encoder.params
        )

    @property
    def descriptor_spec(self) -> DescriptorSpec:
        return self.descriptor.spec

    @property
    def encoder_spec(self) -> EncoderSpec:
        return self.encoder.spec

    @property
    def code_bytes(self) -> int:
        return self.encoder.spec.bits // 8

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, d) float32."""
        return self.descriptor.describe(tiles)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> (n, bits / 8) uint8."""
        return self.encoder.encode(x)

    def codes(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, bits / 8) uint8."""
        return self.encode(self.describe(tiles))

    def save_state(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez(buf, **self.encoder.state())
        path.write_bytes(buf.getvalue())

    def load_state(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable pipeline state ({exc})") from exc
        self.encoder.load_state(state)
