"""The descriptor stage: (n, t, t, 3) uint8 tiles -> (n, dim) float32."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from cbir.registry import Registry
from cbir.specs import DescriptorSpec


class Descriptor(Protocol):
    spec: DescriptorSpec

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 RGB tiles -> (n, spec.dim) float32, finite."""
        ...


DESCRIPTORS: Registry[Descriptor] = Registry("descriptor")
register_descriptor = DESCRIPTORS.register


def create_descriptor(name: str, **params: object) -> Descriptor:
    return DESCRIPTORS.create(name, **params)


def list_descriptors() -> list[str]:
    return DESCRIPTORS.names()
