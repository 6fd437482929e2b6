"""Frozen component specs. A bundle stores them; a query pipeline must match them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class DescriptorSpec(BaseModel):
    """What a descriptor produces from one tile."""

    model_config = ConfigDict(frozen=True)

    name: str
    dim: int
    dtype: Literal["float32"] = "float32"
    tile_size: int  # input tile side, pixels
    params: dict[str, Any] = {}


class EncoderSpec(BaseModel):
    """What an encoder produces from one descriptor."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["binary", "float"] = "binary"
    input_dim: int
    bits: int  # binary: code length, codes are (bits // 8) uint8, little-endian; float: 0
    dim: int = 0  # float: vector length, vectors are (dim,) float32; binary: 0
    standardize: bool
    params: dict[str, Any] = {}
    #: float: how grids store the vectors (float16 halves them; the encoder then rounds
    #: its output to float16's values, so index, grids and queries agree)
    code_dtype: Literal["float32", "float16"] = "float32"

    @property
    def code_bytes(self) -> int:
        """Bytes per stored code: bits / 8, or 4 (float16: 2) * dim for float vectors."""
        if self.kind == "binary":
            return self.bits // 8
        return (2 if self.code_dtype == "float16" else 4) * self.dim
