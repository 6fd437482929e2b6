"""Seed 000's region distance D = d_near(Q, B') + d_near(B', Q), and overlap suppression."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.search.hamming import hamming_matrix
from cbir.search.region import RegionCandidate, d_near, region_distance, suppress_overlaps


def codes(*values: int) -> np.ndarray:
    """One-byte codes from ints -> (n, 1) uint8."""
    return np.array(values, np.uint8)[:, None]


def test_hamming_matrix() -> None:
    a, b = codes(0b0000, 0b1111), codes(0b0001, 0b0111, 0b1111)
    np.testing.assert_array_equal(hamming_matrix(a, b), [[1, 3, 4], [3, 1, 0]])


def test_d_near_by_hand() -> None:
    # Q = {0000, 1111}, P = {0001, 0111, 1111}
    # d_near(Q, P) = (min(1,3,4) + min(3,1,0)) / 2 = (1 + 0) / 2 = 0.5
    # d_near(P, Q) = (min(1,3) + min(3,1) + min(4,0)) / 3 = (1 + 1 + 0) / 3
    q, p = codes(0b0000, 0b1111), codes(0b0001, 0b0111, 0b1111)
    dist = hamming_matrix(q, p)[None]
    assert d_near(dist, np.ones((1, 2), bool), np.ones((1, 3), bool))[0] == pytest.approx(0.5)
    assert d_near(dist.transpose(0, 2, 1), np.ones((1, 3), bool), np.ones((1, 2), bool))[
        0
    ] == pytest.approx(2 / 3)


def test_region_distance_is_symmetric_and_zero_on_itself() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    p = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    valid = np.ones((3, 4), bool)
    D = region_distance(q, p, valid)
    D_back = [region_distance(p[i], q[None], valid[:1])[0] for i in range(3)]
    np.testing.assert_allclose(D, D_back)
    assert region_distance(q, q[None], valid[:1])[0] == 0.0


def test_invalid_cells_are_ignored() -> None:
    q = codes(0b0000, 0b1111)
    p = np.stack([codes(0b0000, 0b0000)])  # second cell is background
    D = region_distance(q, p, np.array([[True, False]]))
    # d_near(Q, P) = (0 + 4) / 2 = 2 ; d_near(P, Q) over the valid cell only = 0
    assert D[0] == pytest.approx(2.0)


def test_suppress_overlaps_keeps_best_distinct_regions() -> None:
    cands = [
        RegionCandidate(1, 20.0, 5, 5, 0.0, 9),
        RegionCandidate(1, 20.0, 6, 6, 1.0, 9),  # overlaps the first (3 x 3)
        RegionCandidate(1, 10.0, 6, 6, 1.5, 9),  # other magnification: kept
        RegionCandidate(1, 20.0, 8, 5, 2.0, 9),  # touches, does not overlap: kept
        RegionCandidate(2, 20.0, 5, 5, 3.0, 9),  # other slide: kept
    ]
    kept = suppress_overlaps(cands, 3, 3, 10)
    assert [c.distance for c in kept] == [0.0, 1.5, 2.0, 3.0]
    assert len(suppress_overlaps(cands, 3, 3, 2)) == 2
