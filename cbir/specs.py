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
    input_dim: int
    bits: int  # code length; codes are (bits // 8) uint8, little-endian bit order
    standardize: bool
    params: dict[str, Any] = {}
