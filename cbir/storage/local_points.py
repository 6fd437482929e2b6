"""The LMDB record of a tile's local features: its keypoints, quantised.

A record is the header (features n, descriptor dim d) and then either
- d = 0 (since compact local features): the level-0 origin x0, y0 and step (float64)
  and per feature uint16 x, y (level-0 = origin + q * step, step = the tile's keypoint
  span / 65535, so at most half a step off: 0.01 level-0 px for a 448 px tile at 20x of
  a 40x slide), float16 pyramid scale and float16 attention: 8 bytes a feature; the
  descriptors are the local index's codes;
- d > 0 (bundles written before): float32 (x, y, scale, attention) and float16
  descriptors (n, d).
"""

from __future__ import annotations

import struct

import numpy as np

_HEAD = struct.Struct("<II")  # features, stored descriptor dim (0: none)
_ORIGIN = struct.Struct("<ddd")  # x0, y0, step (level-0 px)
_POINT = np.dtype([("x", "<u2"), ("y", "<u2"), ("scale", "<f2"), ("attention", "<f2")])
_F16_MAX = float(np.finfo(np.float16).max)


def encode_points(points: np.ndarray) -> bytes:
    """(n, 4) [level-0 x, y, pyramid scale, attention] -> a record (8 bytes a feature)."""
    points = np.asarray(points, np.float64).reshape(-1, 4)
    n = len(points)
    x0, y0 = (points[:, 0].min(), points[:, 1].min()) if n else (0.0, 0.0)
    span = max(points[:, 0].max() - x0, points[:, 1].max() - y0) if n else 0.0
    step = span / 65535 if span > 0 else 1.0
    rec = np.empty(n, _POINT)
    rec["x"] = np.rint((points[:, 0] - x0) / step)
    rec["y"] = np.rint((points[:, 1] - y0) / step)
    rec["scale"] = points[:, 2]
    rec["attention"] = np.clip(points[:, 3], -_F16_MAX, _F16_MAX)
    return _HEAD.pack(n, 0) + _ORIGIN.pack(x0, y0, step) + rec.tobytes()


def feature_count(raw: bytes) -> int:
    return int(_HEAD.unpack_from(raw)[0])


def decode_points(raw: bytes, with_descriptors: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A record -> points (n, 4) float32 and, for records that hold them and when asked,
    descriptors (n, d) float32 (else None)."""
    n, d = _HEAD.unpack_from(raw)
    off = _HEAD.size
    if d == 0:
        x0, y0, step = _ORIGIN.unpack_from(raw, off)
        rec = np.frombuffer(raw, _POINT, count=n, offset=off + _ORIGIN.size)
        points = np.column_stack(
            [
                x0 + rec["x"].astype(np.float64) * step,
                y0 + rec["y"].astype(np.float64) * step,
                rec["scale"],
                rec["attention"],
            ]
        ).astype(np.float32)
        return points.reshape(n, 4), None
    points = np.frombuffer(raw, "<f4", count=4 * n, offset=off).reshape(n, 4)
    desc = None
    if with_descriptors:
        desc = np.frombuffer(raw, "<f2", count=n * d, offset=off + 16 * n)
        desc = desc.reshape(n, d).astype(np.float32)
    return points, desc
