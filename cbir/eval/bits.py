"""Quality of binary codes: balance and correlation of their bits."""

from __future__ import annotations

import numpy as np


def bit_statistics(bits: np.ndarray) -> dict[str, float]:
    """(n, q) bool codes -> balance (mean |P(bit = 1) - 0.5|, 0 is ideal) and mean |r|
    between bits (0 is ideal); constant bits count as balance 0.5 and correlation 0."""
    b = bits.astype(np.float64)
    rate = b.mean(axis=0)
    sd = b.std(axis=0)
    live = sd > 0
    corr = 0.0
    if live.sum() >= 2:
        c = np.corrcoef(b[:, live].T)
        off = c[~np.eye(len(c), dtype=bool)]
        corr = float(np.abs(off).mean())
    return {
        "bit_balance": float(np.abs(rate - 0.5).mean()),
        "bit_correlation": corr,
        "constant_bits": int((~live).sum()),
    }
