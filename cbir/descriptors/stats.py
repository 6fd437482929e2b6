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
        """(n, t, t, 3) uint8 -> (n, 12) float32."""
        n = tiles.shape[0]
        out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
        for i in range(n):
            grey8 = cv2.cvtColor(np.ascontiguousarray(tiles[i]), cv2.COLOR_RGB2GRAY)
            out[i, :6] = self._intensity_stats(grey8)
            out[i, 6:] = self._glcm_features(grey8)
        return out

    @staticmethod
    def _intensity_stats(grey8: np.ndarray) -> np.ndarray:
        hist = np.bincount(grey8.ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        levels = np.arange(256) / 255.0
        mean = float(p @ levels)
        centred = levels - mean
        var2 = float(p @ centred**2)
        sd = np.sqrt(var2)
        if sd > 1e-12:
            skew = float(p @ centred**3) / sd**3
            kurt = float(p @ centred**4) / sd**4
        else:
            skew, kurt = 0.0, 0.0
        nz = p[p > 0]
        entropy = float(-(nz * np.log2(nz)).sum())
        return np.array([mean, sd, sd / mean if mean > 1e-12 else 0.0, skew, kurt, entropy])

    def _glcm_features(self, grey8: np.ndarray) -> np.ndarray:
        from skimage.feature import graycomatrix, graycoprops  # (scipy): on first use

        quantised = (grey8.astype(np.uint16) * self.glcm_levels // 256).astype(np.uint8)
        glcm = graycomatrix(
            quantised, [self.glcm_distance], [0.0], levels=self.glcm_levels, normed=True
        )
        feats = np.array([graycoprops(glcm, prop)[0, 0] for prop in GLCM_PROPS])
        # Correlation is undefined (NaN) on a constant tile; call it fully correlated.
        return np.nan_to_num(feats, nan=1.0)


@register_descriptor("stats")
def _create_stats(**params: object) -> StatsDescriptor:
    return StatsDescriptor(**params)  # type: ignore[arg-type]
