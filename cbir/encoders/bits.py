"""Quality of binary codes: balance and correlation of their bits."""

from __future__ import annotations

import numpy as np


def bit_statistics(bits: np.ndarray) -> dict[str, float]:
    """(n, q) bool codes -> balance (mean |P(bit = 1) - 0.5|, 0 is ideal) and mean |r|
    between bits (0 is ideal); constant bits count as balance 0.5 and correlation 0."""
    n = max(1, len(bits))
    ones = bits.astype(np.float32)  # 0/1: exact in float32, and the products below are counts
    rate = ones.sum(axis=0, dtype=np.float64) / n
    sd = np.sqrt(rate * (1.0 - rate))  # population sd of a 0/1 variable
    live = sd > 0
    corr = 0.0
    if live.sum() >= 2:
        b = ones[:, live]
        both = np.zeros((b.shape[1], b.shape[1]))
        for i in range(0, len(b), 1 << 16):  # float32 partial sums stay exact (< 2**24)
            chunk = b[i : i + (1 << 16)]
            both += (chunk.T @ chunk).astype(np.float64)
        cov = both / n - np.outer(rate[live], rate[live])
        c = cov / np.outer(sd[live], sd[live])
        off = c[~np.eye(len(c), dtype=bool)]
        corr = float(np.abs(off).mean())
    return {
        "bit_balance": float(np.abs(rate - 0.5).mean()),
        "bit_correlation": corr,
        "constant_bits": int((~live).sum()),
    }
