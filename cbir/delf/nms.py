"""Non-maximum suppression of feature boxes ordered by attention (OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np


def box_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.8, max_keep: int = 1000
) -> np.ndarray:
    """Indices of kept boxes, highest score first: a box is dropped when its IoU with a
    kept, higher-scoring box exceeds `iou_threshold`; at most `max_keep`.

    boxes: (n, 4) [x_min, y_min, x_max, y_max]; scores: (n,).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.column_stack(
        [boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]
    ).astype(np.float32)
    # OpenCV keeps scores > a threshold >= 0: shift them to start at 1 (order unchanged).
    shifted = (scores.astype(np.float64) - float(scores.min()) + 1.0).astype(np.float32)
    keep = cv2.dnn.NMSBoxes(
        xywh.tolist(),
        shifted.tolist(),
        score_threshold=0.0,
        nms_threshold=iou_threshold,  # no top_k: OpenCV applies it before suppression
    )
    keep = np.asarray(keep, dtype=np.int64).ravel()
    order = np.argsort(-scores[keep], kind="stable")
    return keep[order][:max_keep]
