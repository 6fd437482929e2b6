"""DELF geometry (seed 003): receptive fields, NMS, RANSAC verification."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.delf.nms import box_nms
from cbir.delf.verify import mutual_nearest, verify_matches
from cbir.nn.receptive import box_centres, receptive_boxes
from cbir.search.local import one_to_one


@pytest.mark.parametrize("scale", [0.25, 0.7071, 1.0, 2.0])
def test_receptive_boxes_by_hand(scale: float) -> None:
    boxes = receptive_boxes(3, 4, scale)
    assert boxes.shape == (12, 4)
    # feature (row 0, col 0): [-133, -133, 134, 134] on the rescaled image
    np.testing.assert_allclose(boxes[0], np.array([-133, -133, 134, 134]) / scale, rtol=1e-6)
    # feature (row 2, col 3) is row-major index 11: x0 = 3*16 - 133 = -85, y0 = 2*16 - 133
    np.testing.assert_allclose(boxes[11], np.array([-85, -101, 182, 166]) / scale, rtol=1e-6)
    centres = box_centres(boxes)
    np.testing.assert_allclose(centres[11], np.array([48.5, 32.5]) / scale, rtol=1e-6)


def test_nms_on_constructed_boxes() -> None:
    boxes = np.array(
        [
            [0, 0, 100, 100],  # A, best
            [2, 2, 102, 102],  # B: IoU with A ~0.92 > 0.8 -> suppressed
            [0, 0, 100, 50],  # C: IoU with A 0.5 -> kept
            [500, 500, 600, 600],  # D: disjoint -> kept
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert box_nms(boxes, scores, 0.8).tolist() == [0, 2, 3]
    assert box_nms(boxes, scores, 0.8, max_keep=2).tolist() == [0, 2]
    assert box_nms(boxes, scores, 0.4).tolist() == [0, 3]  # C now overlaps A too much


def transformed_matches(
    rng: np.random.Generator, n: int, outliers: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of an image and of its rotated (25 deg), scaled (0.6) and shifted copy
    (a crop), with a fraction of wrong matches."""
    q = rng.uniform(0, 1024, (n, 2))
    a = 0.6 * np.array([[np.cos(0.436), -np.sin(0.436)], [np.sin(0.436), np.cos(0.436)]])
    affine = np.column_stack([a, [-150.0, 80.0]])
    c = q @ a.T + affine[:, 2]
    bad = rng.random(n) < outliers
    c[bad] = rng.uniform(0, 1024, (int(bad.sum()), 2))
    return q, c, affine


def test_transformed_copy_verifies_and_the_transform_is_recovered() -> None:
    q, c, affine = transformed_matches(np.random.default_rng(0), 400, outliers=0.4)
    result = verify_matches(q, c)
    assert result.inliers >= 0.55 * 400
    np.testing.assert_allclose(np.array(result.affine), affine, atol=0.5)


def test_unrelated_matches_get_few_inliers_and_results_repeat() -> None:
    rng = np.random.default_rng(1)
    q, c = rng.uniform(0, 1024, (300, 2)), rng.uniform(0, 1024, (300, 2))
    first = verify_matches(q, c, seed=3)
    assert first.inliers < 0.1 * 300
    assert verify_matches(q, c, seed=3) == first
    q2, c2, _ = transformed_matches(np.random.default_rng(2), 200, outliers=0.5)
    assert verify_matches(q2, c2, seed=7) == verify_matches(q2, c2, seed=7)


def test_mutual_nearest_by_hand() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    db = np.array([[0.0, 1.0], [1.0, 0.0]])
    qi, di = mutual_nearest(q, db, max_distance=0.5)
    pairs = sorted(zip(qi.tolist(), di.tolist(), strict=True))
    assert pairs == [(0, 1), (1, 0)]  # q[2] is nobody's nearest


def test_one_to_one_by_hand() -> None:
    a = np.array([0, 1, 2, 2, 3])  # query features
    b = np.array([7, 7, 8, 9, 9])  # stored keypoints
    dist = np.array([0.3, 0.1, 0.5, 0.2, 0.4])
    keep = one_to_one(a, b, dist)
    # b=7: a=1 is nearer; b=9: a=2 (0.2) beats a=3; then a=2 keeps its nearest (b=9)
    assert sorted(zip(a[keep].tolist(), b[keep].tolist(), strict=True)) == [(1, 7), (2, 9)]


def test_many_query_features_on_few_keypoints_do_not_win_ransac() -> None:
    """60 query features matched to 3 stored keypoints a few px apart (a bland spot that
    attracts matches) outvote 30 true matches unless the matches are made one-to-one."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 400, (90, 2))
    affine = np.array([[0.9, -0.3, 50.0], [0.3, 0.9, 20.0]])
    c = q @ affine[:, :2].T + affine[:, 2]
    stored_row = np.r_[np.arange(30), 30 + np.arange(60) % 3]
    spot = np.array([[200.0, 200.0], [203.0, 198.0], [199.0, 204.0]])
    c[30:] = spot[stored_row[30:] - 30]
    collapsed = verify_matches(q, c)
    assert abs(np.linalg.det(np.array(collapsed.affine)[:, :2])) < 0.01  # the squeeze
    keep = one_to_one(np.arange(90), stored_row, rng.random(90))
    assert len(keep) == 33
    result = verify_matches(q[keep], c[keep])
    assert result.inliers >= 30
    np.testing.assert_allclose(np.array(result.affine), affine, atol=1e-3)
