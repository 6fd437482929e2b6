"""`stats` (seed 000): 6 grey-level statistics + 6 GLCM features = 12 numbers per tile."""

from __future__ import annotations

import cv2
import numpy as np

from cbir.descriptors.base import register_descriptor
from cbir.specs import DescriptorSpec

FEATURE_NAMES = (
    "mean",
    "sd",
    "var",
    "skew",
    "kurt",
    "entropy",
    "glcm_asm",
    "glcm_entropy",
    "glcm_contrast",
    "glcm_homogeneity",
    "glcm_dissimilarity",
    "glcm_correlation",
)
GLCM_PROPS = ("ASM", "entropy", "contrast", "homogeneity", "dissimilarity", "correlation")


@register_descriptor("stats")
class StatsDescriptor:
    """Grey image in [0, 1]: MEAN, SD, VAR = SD / MEAN, SKEW, KURT (non-excess), ENT (bits,
    256-bin histogram); GLCM at `glcm_distance` px, 0 degrees, on `glcm_levels` grey levels,
    normalised to p(i, j): ASM, ENT, CON, HOM, DIS, COR (standard Haralick definitions)."""

    def __init__(self, tile_size: int = 224, glcm_distance: int = 5, glcm_levels: int = 64):
        if not 2 <= glcm_levels <= 256:
            raise ValueError("glcm_levels must be in 2..256")
        self.glcm_distance = glcm_distance
        self.glcm_levels = glcm_levels
        self.spec = DescriptorSpec(
            name="stats",
            dim=len(FEATURE_NAMES),
            tile_size=tile_size,
            params={"glcm_distance": glcm_distance, "glcm_levels": glcm_levels},
        )

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 -> (n, 12) float32, all tiles at once (numpy over the batch:
        equal to `describe_one` per tile within float64 rounding)."""
        n = tiles.shape[0]
        out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
        if n == 0:
            return out
        t = tiles.shape[1]
        stacked = np.ascontiguousarray(tiles).reshape(n * t, tiles.shape[2], 3)
        grey = cv2.cvtColor(stacked, cv2.COLOR_RGB2GRAY).reshape(n, -1)
        out[:, :6] = _intensity_stats(grey)
        out[:, 6:] = self._glcm_features(grey.reshape(n, t, -1))
        return out

    def describe_one(self, tile: np.ndarray) -> np.ndarray:
        """One (t, t, 3) uint8 tile -> (12,) float64 with scikit-image's GLCM: the
        reference `describe` is tested against."""
        from skimage.feature import graycomatrix, graycoprops  # (scipy): on first use

        grey8 = cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_RGB2GRAY)
        quantised = (grey8.astype(np.uint16) * self.glcm_levels // 256).astype(np.uint8)
        glcm = graycomatrix(
            quantised, [self.glcm_distance], [0.0], levels=self.glcm_levels, normed=True
        )
        feats = np.array([graycoprops(glcm, prop)[0, 0] for prop in GLCM_PROPS])
        stats = _intensity_stats(grey8.reshape(1, -1))[0]
        return np.concatenate([stats, np.nan_to_num(feats, nan=1.0)])

    def _glcm_features(self, grey: np.ndarray) -> np.ndarray:
        """(n, t, t) uint8 grey tiles -> (n, 6) GLCM features: co-occurrences at
        `glcm_distance` px to the right on `glcm_levels` levels, as scikit-image's
        graycomatrix (normed) and graycoprops compute them."""
        n, levels, d = len(grey), self.glcm_levels, self.glcm_distance
        lut = (np.arange(256) * levels // 256).astype(np.uint8)
        q = cv2.LUT(grey.reshape(-1, grey.shape[2]), lut).reshape(grey.shape)
        P = np.empty((n, levels, levels), np.float64)
        for k in range(n):  # 2-D histogram of (i at (r, c), j at (r, c + d)), in C
            left, right = np.ascontiguousarray(q[k, :, :-d]), np.ascontiguousarray(q[k, :, d:])
            P[k] = cv2.calcHist([left, right], [0, 1], None, [levels, levels], [0, levels] * 2)
        for _ in range(2):  # graycomatrix normalises, then graycoprops again
            sums = P.sum(axis=(1, 2), keepdims=True)
            sums[sums == 0] = 1
            P /= sums
        i = np.arange(levels, dtype=np.float64)[:, None]
        j = np.arange(levels, dtype=np.float64)[None, :]
        ln = -np.log(P, where=P != 0, out=np.zeros_like(P))
        mean_i = (i * P).sum(axis=(1, 2))[:, None, None]
        mean_j = (j * P).sum(axis=(1, 2))[:, None, None]
        di, dj = i - mean_i, j - mean_j
        std_i = np.sqrt((P * di**2).sum(axis=(1, 2)))
        std_j = np.sqrt((P * dj**2).sum(axis=(1, 2)))
        cov = (P * di * dj).sum(axis=(1, 2))
        flat = (std_i < 1e-15) | (std_j < 1e-15)  # a constant tile: fully correlated
        corr = np.where(flat, 1.0, cov / np.where(flat, 1.0, std_i * std_j))
        return np.stack(
            [
                (P**2).sum(axis=(1, 2)),
                (P * ln).sum(axis=(1, 2)),
                (P * (i - j) ** 2).sum(axis=(1, 2)),
                (P / (1.0 + (i - j) ** 2)).sum(axis=(1, 2)),
                (P * np.abs(i - j)).sum(axis=(1, 2)),
                corr,
            ],
            axis=1,
        )


def _intensity_stats(grey: np.ndarray) -> np.ndarray:
    """(n, pixels) uint8 -> (n, 6): mean, sd, sd / mean, skew, kurtosis (non-excess),
    entropy (bits, 256-bin histogram) of grey levels in [0, 1]."""
    p = np.stack([cv2.calcHist([g], [0], None, [256], [0, 256]).ravel() for g in grey])
    p = p.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    levels = np.arange(256) / 255.0
    mean = p @ levels
    centred = levels[None, :] - mean[:, None]
    sd = np.sqrt((p * centred**2).sum(axis=1))
    ok = sd > 1e-12
    safe = np.where(ok, sd, 1.0)
    skew = np.where(ok, (p * centred**3).sum(axis=1) / safe**3, 0.0)
    kurt = np.where(ok, (p * centred**4).sum(axis=1) / safe**4, 0.0)
    entropy = -(p * np.log2(p, where=p > 0, out=np.zeros_like(p))).sum(axis=1)
    cv = np.where(mean > 1e-12, sd / np.where(mean > 1e-12, mean, 1.0), 0.0)
    return np.stack([mean, sd, cv, skew, kurt, entropy], axis=1)
