"""Geometric verification: RANSAC affine fit on matched keypoints (OpenCV, seeded)."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel

#: DELF defaults (seed 003): affine model, residual threshold ~20 px, up to 1000 trials.
RESIDUAL_PX = 20.0
MAX_TRIALS = 1000


class Verification(BaseModel):
    inliers: int
    matches: int
    affine: list[list[float]] | None  # 2 x 3, maps query (x, y) to candidate (x, y)


def verify_matches(
    query_xy: np.ndarray,
    cand_xy: np.ndarray,
    residual: float = RESIDUAL_PX,
    max_trials: int = MAX_TRIALS,
    seed: int = 0,
) -> Verification:
    """Fit an affine transform query -> candidate to matched keypoints (m, 2) with RANSAC
    (3-point samples); returns the inlier count and the transform. Seeded: the same input
    gives the same result."""
    m = len(query_xy)
    if m < 3:
        return Verification(inliers=0, matches=m, affine=None)
    cv2.setRNGSeed(seed)
    affine, mask = cv2.estimateAffine2D(
        query_xy.astype(np.float32),
        cand_xy.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=residual,
        maxIters=max_trials,
        confidence=0.999,
        refineIters=10,
    )
    if affine is None:
        return Verification(inliers=0, matches=m, affine=None)
    return Verification(inliers=int(mask.sum()), matches=m, affine=affine.tolist())


def mutual_nearest(
    q: np.ndarray, db: np.ndarray, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Matches between descriptor sets (nq, d) and (nd, d), both L2-normalised: pairs that
    are each other's nearest neighbour within `max_distance` (Euclidean).
    Returns index arrays (m,), (m,) into q and db."""
    if len(q) == 0 or len(db) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    d2 = (q * q).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2 * q @ db.T
    fwd = d2.argmin(axis=1)
    back = d2.argmin(axis=0)
    qi = np.flatnonzero(
        (back[fwd] == np.arange(len(q))) & (d2[np.arange(len(q)), fwd] <= max_distance**2)
    )
    return qi, fwd[qi]
