"""The encoder stage: (n, d) float32 descriptors -> binary codes or float vectors."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from cbir.registry import Registry
from cbir.specs import EncoderSpec


class Encoder(Protocol):
    spec: EncoderSpec

    def fit(self, x: np.ndarray) -> None:
        """Learn what the encoder needs from (n, d) float32 collection descriptors."""
        ...

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> codes: (n, bits // 8) uint8 packed little-endian (Faiss
        layout) for a binary encoder, (n, dim) float32 for a float one."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that, with the spec, reproduce the encoder exactly."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None: ...


ENCODERS: Registry[Encoder] = Registry("encoder")
register_encoder = ENCODERS.register


def create_encoder(name: str, **params: object) -> Encoder:
    return ENCODERS.create(name, **params)


def list_encoders() -> list[str]:
    return ENCODERS.names()


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, nbits) bool -> (n, nbits // 8) uint8, little-endian within each byte (Faiss)."""
    return np.packbits(bits, axis=1, bitorder="little")


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) rows -> per-dimension mean and scale (sd, 1 where a dimension is
    constant), float32 (d,) each."""
    x64 = x.astype(np.float64)
    sd = x64.std(axis=0)
    return x64.mean(axis=0).astype(np.float32), np.where(sd > 1e-12, sd, 1.0).astype(np.float32)
