"""`open_slide`: pick the backend for a file, find its magnification."""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import numpy as np
import openslide
from PIL import Image, UnidentifiedImageError

from cbir.errors import SlideReadError
from cbir.slides.array_slide import ArraySlide
from cbir.slides.base import Slide, SlideInfo, magnification_from_mpp
from cbir.slides.dicom_slide import (
    dicom_files,
    instance_note,
    is_dicom_file,
    is_dicom_folder,
    open_dicom,
)
from cbir.slides.openslide_slide import OpenSlideSlide

#: Base magnification assumed for a slide that states neither objective power nor mpp.
DEFAULT_BASE_MAGNIFICATION = 20.0
#: Objective powers that mpp-derived magnifications snap to.
STANDARD_OBJECTIVES = (1.25, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 63.0, 100.0)
#: mpp giving a magnification outside this range is not a microscope's (ignored).
MIN_PLAUSIBLE_MAGNIFICATION, MAX_PLAUSIBLE_MAGNIFICATION = 1.0, 150.0

Image.MAX_IMAGE_PIXELS = None  # plain images can be large scans; we read them on purpose


def file_checksum(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of (size, first MiB, last MiB): identifies a slide file without reading GBs;
    a DICOM folder's is that of its files' names and checksums."""
    if path.is_dir():
        digest = hashlib.sha256()
        for f in dicom_files(path):
            digest.update(f"{f.name}:{file_checksum(f, chunk)}\n".encode())
        return "sha256-dicom:" + digest.hexdigest()
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            digest.update(fh.read(chunk))
    return "sha256-ends:" + digest.hexdigest()


def _base_magnification(
    path: Path, props: dict[str, str], fallback: float | None
) -> tuple[float, str, float | None]:
    """(magnification, source, mpp) from OpenSlide properties, else the fallback.

    source is "objective-power", "mpp", "given" (the caller's fallback) or "default".
    """
    mpp_text = props.get(openslide.PROPERTY_NAME_MPP_X)
    mpp = float(mpp_text) if mpp_text else None
    power = props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    if power:
        try:
            return float(power), "objective-power", mpp
        except ValueError:
            pass
    if mpp and mpp > 0:
        mag = snap_magnification(magnification_from_mpp(mpp))
        if MIN_PLAUSIBLE_MAGNIFICATION <= mag <= MAX_PLAUSIBLE_MAGNIFICATION:
            return mag, "mpp", mpp
        # e.g. a print resolution (72 dpi) in the TIFF tags: not a microscope's
    base = fallback if fallback is not None else DEFAULT_BASE_MAGNIFICATION
    return base, "default" if fallback is None else "given", None


def snap_magnification(mag: float, tolerance: float = 0.1) -> float:
    """The nearest standard objective power when within `tolerance` (relative), else
    `mag`: 0.2527 um/px gives 39.57x, which is a 40x scan."""
    nearest = min(STANDARD_OBJECTIVES, key=lambda s: abs(s - mag))
    return nearest if abs(nearest - mag) <= tolerance * nearest else mag


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def decode_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF/... file with PIL -> (h, w, 3) uint8 RGB.

    `max_pixels`: refuse a larger image from its header, before any pixel is decoded.
    Raises `SlideReadError` naming the file (truncated TIFFs are called so).
    """
    if path.is_dir():
        raise SlideReadError(f"{path}: is a directory, not an image")
    if not path.is_file():
        raise SlideReadError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF; errors still raise
            im = Image.open(path)
        with im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise SlideReadError(
                    f"{path}: {im.width} x {im.height} px is larger than a query may be "
                    f"({max_pixels / 1e6:.0f} megapixels; crop it or scale it down)"
                )
            im.load()
            return to_rgb8(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if _is_tiff(path) and isinstance(exc, UnidentifiedImageError):
            raise SlideReadError(
                f"{path}: a TIFF that PIL cannot read: truncated or damaged, or of pixels it "
                "does not take (floating-point, more than 4 samples; save those as 8- or "
                "16-bit RGB)"
            ) from exc
        if _is_tiff(path):
            raise SlideReadError(f"{path}: truncated or corrupt TIFF/slide file ({exc})") from exc
        raise SlideReadError(f"{path}: unsupported or unreadable image ({exc})") from exc


def to_rgb8(im: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (h, w, 3) uint8 RGB. High bit depths are scaled by their
    maximum (not clipped); transparency is composited onto white, as OpenSlide does."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / (65535.0 if im.mode.startswith("I;16") else max(top, 1e-12))
        grey = np.clip(values * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def _open_with_pil(path: Path, fallback: float | None) -> ArraySlide:
    """A plain image as a one-level slide (its dpi is a print setting, not a microscope's)."""
    rgb = decode_image(path)
    base, source, mpp = _base_magnification(path, {}, fallback)
    h, w = rgb.shape[:2]
    info = SlideInfo(
        path=str(path.resolve()),
        name=path.name,
        backend="pil",
        width=w,
        height=h,
        level_count=1,
        base_magnification=base,
        magnification_source=source,
        mpp=mpp,
    )
    return ArraySlide(rgb, info)


def open_slide(path: str | os.PathLike[str], base_magnification: float | None = None) -> Slide:
    """Open a slide or image file.

    OpenSlide formats go through OpenSlide; PNG/JPEG/plain TIFF through PIL as one level.
    `base_magnification` is used only when the file states neither objective power nor mpp.
    Raises `SlideReadError` naming the file when it cannot be read.
    """
    p = Path(path)
    if base_magnification is not None and not (
        math.isfinite(base_magnification) and base_magnification > 0
    ):
        raise SlideReadError(f"{p}: base magnification {base_magnification} must be > 0")
    if p.is_dir():
        if is_dicom_folder(p):
            return open_dicom(p, base_magnification, _base_magnification)
        raise SlideReadError(f"{p}: is a directory, not a slide (nor a DICOM WSI series)")
    if not p.is_file():
        raise SlideReadError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise SlideReadError(f"{p}: file is empty (0 bytes)")
    if is_dicom_file(p):
        raise SlideReadError(instance_note(p))
    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except openslide.OpenSlideError:
        vendor = None
    if vendor is None:
        return _open_with_pil(p, base_magnification)
    try:
        handle = openslide.OpenSlide(str(p))
    except (openslide.OpenSlideError, OSError) as exc:
        # OpenSlide refuses some TIFFs it detects (e.g. non-pyramidal): try them as images.
        if vendor == "generic-tiff":
            return _open_with_pil(p, base_magnification)
        raise SlideReadError(f"{p}: unreadable {vendor} slide ({exc})") from exc
    props = dict(handle.properties)
    base, source, mpp = _base_magnification(p, props, base_magnification)
    width, height = handle.dimensions
    info = SlideInfo(
        path=str(p.resolve()),
        name=p.name,
        backend="openslide",
        width=width,
        height=height,
        level_count=handle.level_count,
        base_magnification=base,
        magnification_source=source,
        mpp=mpp,
        vendor=vendor,
    )
    return OpenSlideSlide(handle, info)
