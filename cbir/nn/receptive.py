"""Receptive-field boxes of a feature map, mapped back to image coordinates.

DELF (ResNet-50 conv4_x): k = 267, s = 16, p = 133. Feature (i, j) of the map of an image
rescaled by `scale` covers x in [j * s - p, j * s - p + k) of the rescaled image, i.e.
that divided by `scale` in the original image; same for y with i.
"""

from __future__ import annotations

import numpy as np

RF_SIZE, RF_STRIDE, RF_PADDING = 267, 16, 133


def receptive_boxes(
    rows: int,
    cols: int,
    scale: float = 1.0,
    k: int = RF_SIZE,
    s: int = RF_STRIDE,
    p: int = RF_PADDING,
) -> np.ndarray:
    """(rows * cols, 4) float32 boxes [x_min, y_min, x_max, y_max] in original-image pixels,
    row-major over the map."""
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    x0, y0 = jj.ravel() * s - p, ii.ravel() * s - p
    boxes = np.stack([x0, y0, x0 + k, y0 + k], axis=1).astype(np.float64) / scale
    return boxes.astype(np.float32)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) boxes -> (n, 2) centres (x, y): the keypoints of the features."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
