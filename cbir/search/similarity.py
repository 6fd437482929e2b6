"""Similarity in [0, 1] of a hit, from its distance, fixed per recipe so that it is
comparable across the queries of one bundle (not across recipes). 1 is identical.

- Hamming on b-bit codes: 1 - d / b (0.5 is what two random codes share).
- Squared L2 between unit vectors: 1 - d / 4 (= (1 + cos) / 2).
- Squared L2 between other vectors of dimension n: 1 / (1 + d / n).
- Local-feature verification: 1 - exp(-inliers / INLIER_SCALE).
Region distances D = d_near(Q, B') + d_near(B', Q) count a per-tile distance twice, so
a region's similarity is that of D / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: Inliers at which a verified hit's similarity is 1 - 1/e (0.63).
INLIER_SCALE = 10.0


@dataclass(frozen=True)
class SimilarityScale:
    """How one kind of distance maps to [0, 1]; `ref` is the bits, or the dimension."""

    kind: Literal["hamming", "unit_l2", "l2", "inliers"]
    ref: float = 1.0

    def __call__(self, distance: float, region: bool = False) -> float:
        d = distance / 2 if region else distance
        if self.kind == "hamming":
            s = 1.0 - d / self.ref
        elif self.kind == "unit_l2":
            s = 1.0 - d / 4.0
        elif self.kind == "l2":
            s = 1.0 / (1.0 + max(d, 0.0) / self.ref)
        else:
            s = 1.0 - math.exp(-max(d, 0.0) / INLIER_SCALE)
        return round(min(1.0, max(0.0, s)), 6)


INLIERS = SimilarityScale("inliers")


def code_scale(binary: bool, bits: int, dim: int, unit: bool) -> SimilarityScale:
    """The scale of a bundle's code distances (Hamming, or squared L2 of its vectors)."""
    if binary:
        return SimilarityScale("hamming", float(bits))
    return SimilarityScale("unit_l2") if unit else SimilarityScale("l2", float(max(dim, 1)))


def vector_scale(dim: int, unit: bool) -> SimilarityScale:
    """The scale of squared L2 between stored descriptors (two-step rerank)."""
    return SimilarityScale("unit_l2") if unit else SimilarityScale("l2", float(max(dim, 1)))
