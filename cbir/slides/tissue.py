"""Tissue mask: Otsu threshold on the saturation of a thumbnail (scikit-image)."""

from __future__ import annotations

import cv2
import numpy as np

#: Saturation (0..1) below which a pixel is background whatever Otsu says: glass and
#: white balance noise sit below it, the faintest stained tissue above it.
MIN_TISSUE_SATURATION = 0.07
#: Otsu's lower class must be this unsaturated (glass) for its threshold to be used;
#: otherwise the image is all tissue and Otsu would split one stain from another.
MAX_BACKGROUND_SATURATION = 0.06


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (h, w) bool, True on tissue.

    Threshold = Otsu on the saturation when its lower class is glass (mean saturation
    below MAX_BACKGROUND_SATURATION), else MIN_TISSUE_SATURATION; never below the latter.
    """
    from skimage.filters import threshold_otsu  # scipy.ndimage: only when a mask is made

    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    sat = cv2.GaussianBlur(sat, (5, 5), 0)
    threshold = MIN_TISSUE_SATURATION
    if float(sat.max()) - float(sat.min()) > 1e-3:
        otsu = float(threshold_otsu(sat))
        lower = sat[sat <= otsu]
        if lower.size and float(lower.mean()) < MAX_BACKGROUND_SATURATION:
            threshold = max(threshold, otsu)
    return sat > threshold


class TissueFractions:
    """Fraction of tissue in any level-0 rectangle, from a thumbnail mask (integral image)."""

    def __init__(self, mask: np.ndarray, level0_size: tuple[int, int]) -> None:
        """mask: (h, w) bool thumbnail mask of a slide of level0_size (width, height) px."""
        self.shape = mask.shape
        self.fx = level0_size[0] / mask.shape[1]  # level-0 px per mask px
        self.fy = level0_size[1] / mask.shape[0]
        self.integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_64F)

    def fractions(self, x: np.ndarray, y: np.ndarray, w: float, h: float) -> np.ndarray:
        """Tissue fraction in [0, 1] of rectangles at level-0 (x, y) (arrays) of size (w, h)."""
        hh, ww = self.shape
        x0 = np.clip(np.floor(x / self.fx), 0, ww).astype(np.int64)
        y0 = np.clip(np.floor(y / self.fy), 0, hh).astype(np.int64)
        x1 = np.clip(np.ceil((x + w) / self.fx), 0, ww).astype(np.int64)
        y1 = np.clip(np.ceil((y + h) / self.fy), 0, hh).astype(np.int64)
        s = self.integral
        total = s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]
        area = np.maximum((x1 - x0) * (y1 - y0), 1)
        return total / area
