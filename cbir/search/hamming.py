"""Hamming distances between packed binary codes (numpy, for small candidate sets)."""

from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., n, nb) uint8 and (..., m, nb) uint8 -> (..., n, m) int32 Hamming distances."""
    x = np.bitwise_xor(a[..., :, None, :], b[..., None, :, :])
    return _POPCOUNT[x].sum(axis=-1, dtype=np.int32)
