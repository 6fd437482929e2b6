"""Queries that are not brightfield tissue: noise, a heavily blurred field, pen or marker
strokes, a dark (fluorescence or dark-field) image, an inverted or green-dominant one.
Each check is a registered `JunkCheck`: a measure of the query's `Looks`, a limit, and
the reason a refused query is told. The limits sit between real tissue tiles of every
shared slide at 5-20x, and the skimage IHC sample at 40x, and the junk the tests make
(tests/test_junk.py; measured ranges in each check's docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from cbir.errors import QueryError
from cbir.search.query import check_tissue
from cbir.slides.tissue import tissue_mask

#: A pixel darker than this (max of R, G, B; 0..255) is dark: glass is ~240, the
#: darkest stained tissue ~100.
DARK_VALUE = 60
#: A pixel more saturated than this (HSV saturation, 0..255) is vivid: ink, not stain.
VIVID_SATURATION = 150


#: Colour and noise are measured on at most this many px a side: a larger query is
#: sampled (colours: every k-th pixel of the whole; noise: its central crop), so a 900 px
#: query costs what a 512 px one does. Sharpness always sees the whole query.
SAMPLE_SIDE = 512


class Looks:
    """What the checks measure on one (h, w, 3) uint8 RGB query, computed once."""

    def __init__(self, rgb: np.ndarray, tissue: np.ndarray | None = None) -> None:
        """tissue: the (h, w) bool tissue mask of `rgb`, when the caller has made it."""
        self.rgb = rgb
        step = -(-max(rgb.shape[:2]) // SAMPLE_SIDE)  # ceil
        #: (h', w', 3): every `step`-th pixel, for the colour fractions.
        self.colours = rgb[::step, ::step] if step > 1 else rgb
        if tissue is not None and step == 1:  # the mask `tissue` would make: not twice
            self.__dict__["tissue"] = tissue

    @cached_property
    def grey(self) -> np.ndarray:
        """(h, w) float32 luminance of the whole query, 0..255."""
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)

    @cached_property
    def grey_centre(self) -> np.ndarray:
        """The central SAMPLE_SIDE x SAMPLE_SIDE px (at most) of `grey`."""
        h, w = self.rgb.shape[:2]
        y, x = max(0, (h - SAMPLE_SIDE) // 2), max(0, (w - SAMPLE_SIDE) // 2)
        crop = self.rgb[y : y + SAMPLE_SIDE, x : x + SAMPLE_SIDE]
        return cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32)

    @cached_property
    def hsv(self) -> np.ndarray:
        """(h', w', 3) uint8 HSV of `colours` (OpenCV: H 0..179, S and V 0..255)."""
        return cv2.cvtColor(np.ascontiguousarray(self.colours), cv2.COLOR_RGB2HSV)

    @cached_property
    def tissue(self) -> np.ndarray:
        """(h', w') bool: the tissue mask of indexing on `colours` (stained pixels)."""
        return tissue_mask(np.ascontiguousarray(self.colours))

    @cached_property
    def dark(self) -> np.ndarray:
        """(h', w') bool: pixels of `colours` darker than DARK_VALUE."""
        return self.hsv[..., 2] < DARK_VALUE

    def of_tissue(self, pixels: np.ndarray) -> float:
        """Fraction of the tissue pixels where `pixels` (h', w') bool holds (0: none)."""
        n = int(self.tissue.sum())
        return float((pixels & self.tissue).sum() / n) if n else 0.0


@dataclass(frozen=True)
class JunkCheck:
    """Refuse a query when `measure(looks)` is above `limit` (below it with `below`)."""

    name: str
    measure: Callable[[Looks], float]
    limit: float
    below: bool
    reason: str
    what: str  # what the measure is, for the message

    def refuses(self, value: float) -> bool:
        return value < self.limit if self.below else value > self.limit


#: name -> check, in the order they run (the first that refuses is reported).
JUNK_CHECKS: dict[str, JunkCheck] = {}


def register_check(
    name: str, limit: float, reason: str, what: str, below: bool = False
) -> Callable[[Callable[[Looks], float]], Callable[[Looks], float]]:
    def add(measure: Callable[[Looks], float]) -> Callable[[Looks], float]:
        JUNK_CHECKS[name] = JunkCheck(name, measure, limit, below, reason, what)
        return measure

    return add


@register_check("noise", 0.3, "noise, not an image of tissue", "neighbour correlation", True)
def neighbour_correlation(looks: Looks) -> float:
    """Correlation of each pixel's luminance with its right neighbour's: tissue 0.57-1.0,
    uniform or Gaussian noise ~0."""
    g = looks.grey_centre
    a, b = g[:, :-1], g[:, 1:]
    a, b = a - a.mean(), b - b.mean()  # contiguous float32
    aa, bb = float(np.vdot(a, a)), float(np.vdot(b, b))
    if min(aa, bb) < 1e-6 * a.size:  # std < 1e-3: flat, the tissue check speaks for it
        return 1.0
    return float(np.vdot(a, b)) / float(np.sqrt(aa * bb))


@register_check("dark", 0.5, "a dark image (fluorescence or dark field?), not brightfield",
                "dark pixels")  # fmt: skip
def dark_fraction(looks: Looks) -> float:
    """Fraction of dark pixels: brightfield tissue at most 0.11, a fluorescence-like image
    (spots on black) 0.84."""
    return float(looks.dark.mean())


@register_check("green", 0.3, "green-dominant colours (fluorescence, or an inverted image), "
                "not a brightfield stain", "green-dominant pixels of the stained")  # fmt: skip
def green_fraction(looks: Looks) -> float:
    """Fraction of the stained pixels whose green exceeds red and blue: H&E and IHC
    absorb green most (tissue at most 0.08), an inverted H&E tile is 0.85-1."""
    rgb = looks.colours
    green = (rgb[..., 1] > rgb[..., 0]) & (rgb[..., 1] > rgb[..., 2])
    return looks.of_tissue(green)


@register_check("pen", 0.85, "pen or marker ink, not stained tissue", "ink pixels of the stained")
def ink_fraction(looks: Looks) -> float:
    """Fraction of the stained pixels that are vivid or dark, as ink is: tissue at most
    0.6, pen strokes on glass (blue, green, red, black) ~1."""
    vivid = looks.hsv[..., 1] > VIVID_SATURATION
    return looks.of_tissue(vivid | looks.dark)


#: The query is downsampled by this much before the Laplacian: a field upsampled a few
#: times (the IHC sample at 40x) is still sharp there; a heavily blurred one is not.
BLUR_DOWNSAMPLE = 4


@register_check("blur", 0.07, "out of focus (heavily blurred)", "sharpness", below=True)
def sharpness(looks: Looks) -> float:
    """Variance of the Laplacian over the variance of the luminance, after downsampling
    by BLUR_DOWNSAMPLE: tissue tiles 0.15-10 (the lowest: the IHC sample at 40x, 4x
    upsampled; its crops of 224-896 px at least 0.117), tissue tiles blurred with a
    Gaussian of sigma 10 px at most 0.05 (sigma 8: 0.10)."""
    g = looks.grey
    d = BLUR_DOWNSAMPLE
    if min(g.shape) >= 8 * d:
        g = cv2.resize(g, (g.shape[1] // d, g.shape[0] // d), interpolation=cv2.INTER_AREA)
    var = float(g.var())
    if var < 1e-3:
        return np.inf  # flat: the tissue check speaks for it
    return float(cv2.Laplacian(g, cv2.CV_32F).var() / var)


def measure_all(image: np.ndarray) -> dict[str, float]:
    """(h, w, 3) uint8 -> every check's measure, by name."""
    looks = Looks(image)
    return {name: check.measure(looks) for name, check in JUNK_CHECKS.items()}


def first_refusal(
    image: np.ndarray, tissue: np.ndarray | None = None
) -> tuple[JunkCheck, float] | None:
    """(h, w, 3) uint8 -> the first JUNK_CHECKS check that refuses it and its measure
    (later checks are not measured), or None. tissue: its (h, w) bool tissue mask, if
    made."""
    looks = Looks(image, tissue)
    for check in JUNK_CHECKS.values():
        value = check.measure(looks)
        if check.refuses(value):
            return check, value
    return None


def check_not_junk(image: np.ndarray, name: str, tissue: np.ndarray | None = None) -> None:
    """Refuse (QueryError, one line) a query the first JUNK_CHECKS check finds junk.
    tissue: its (h, w) bool tissue mask, if made."""
    refusal = first_refusal(image, tissue)
    if refusal is not None:
        check, value = refusal
        side = "below" if check.below else "above"
        raise QueryError(
            f"{name}: {check.reason} ({check.what} {value:.2f}, {side} the "
            f"{check.limit:g} of brightfield tissue); --allow-background searches it anyway"
        )


def check_looks(image: np.ndarray, tile_size: int, min_fraction: float, name: str) -> None:
    """Refuse a query without tissue (cbir.search.query.check_tissue), then one that is
    not brightfield tissue (check_not_junk); the tissue mask is made once for both."""
    mask = tissue_mask(image)
    check_tissue(image, tile_size, min_fraction, name, mask)
    check_not_junk(image, name, mask)
