"""Query expansion (alpha-QE, Radenovic et al. 2018): a query is replaced by the
normalised sum of itself and its nearest stored vectors weighted by their cosine to the
power alpha, then searched again. For unit-vector (cosine) recipes; tile queries only."""

from __future__ import annotations

import numpy as np


def expand_query(q: np.ndarray, neighbours: np.ndarray, alpha: float) -> np.ndarray:
    """q (d,) and its nearest neighbours (k, d), unit vectors -> the expanded (d,) unit
    query: q + sum_i max(cos(q, x_i), 0)^alpha x_i, L2-normalised. float32."""
    q64 = q.astype(np.float64)
    x64 = neighbours.astype(np.float64)
    w = np.maximum(x64 @ q64, 0.0) ** alpha
    out = q64 + (w[:, None] * x64).sum(axis=0)
    return (out / max(float(np.linalg.norm(out)), 1e-12)).astype(np.float32)


def expanded_leave_one_out(z: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Leave-one-out order (n, n - 1) of unit vectors z (n, d) after expanding each query
    with its k nearest others (itself excluded throughout); ties by index."""
    n = len(z)
    z64 = z.astype(np.float64)
    sim = z64 @ z64.T
    np.fill_diagonal(sim, -np.inf)
    order = np.empty((n, n - 1), dtype=np.int64)
    idx = np.arange(n)
    for i in range(n):
        nn = np.lexsort((idx, -sim[i]))[:k]
        s = z64 @ expand_query(z64[i], z64[nn], alpha).astype(np.float64)
        s[i] = -np.inf
        order[i] = np.lexsort((idx, -s))[: n - 1]
    return order
