"""DICOM whole-slide images (a folder holding one series: pyramid levels, label,
overview, each a `.dcm` instance) read with wsidicom. The series' own pyramid levels
give the geometry and the tissue overview (OpenSlide's DICOM thumbnail can be sheared);
a single instance file is not a slide: it names its series and folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from cbir.errors import SlideReadError
from cbir.slides.base import Slide, SlideInfo

#: SOP class of a whole-slide microscopy image instance.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: The lowest level serves as the stored overview when its long side is at most this.
MAX_OVERVIEW_SIDE = 4096


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: "DICM" after the 128-byte preamble."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in `folder`, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and bool(dicom_files(path))


def series_of(folder: Path) -> set[str]:
    """The SeriesInstanceUIDs of the whole-slide DICOM files directly in `folder` (headers
    only)."""
    import pydicom

    found = set()
    for p in dicom_files(folder):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001, S112 - wsidicom names an unreadable instance
            continue
        if getattr(ds, "SOPClassUID", None) == WSI_SOP_CLASS:
            found.add(str(getattr(ds, "SeriesInstanceUID", "?")))
    return found


def instance_note(path: Path) -> str:
    """Why one `.dcm` file is not opened alone: the series it belongs to and where."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a bad file
        return f"{path}: unreadable DICOM file ({exc})"
    series = getattr(ds, "SeriesInstanceUID", "?")
    if getattr(ds, "SOPClassUID", None) != WSI_SOP_CLASS:
        return f"{path}: a DICOM file but not a whole-slide image (series {series})"
    folder = path.parent
    same = sum(1 for p in dicom_files(folder))
    return (
        f"{path}: one instance of DICOM WSI series {series} ({same} DICOM files in "
        f"{folder}); give the folder {folder} as the slide"
    )


class DicomSlide(Slide):
    """A DICOM WSI series opened with wsidicom; levels in pyramid order (level 0 full)."""

    def __init__(self, wsi: object, info: SlideInfo) -> None:
        self._wsi = wsi
        self.info = info
        levels = list(wsi.levels)  # type: ignore[attr-defined]
        self._numbers = [lv.level for lv in levels]  # wsidicom's: log2 of the downsample
        self.level_dimensions = tuple((lv.size.width, lv.size.height) for lv in levels)
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = tuple(w0 / w for w, _ in self.level_dimensions)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 of `level`; (x, y) level-0 px. Outside the image reads white."""
        ds = self.level_downsamples[level]
        lx, ly = round(x / ds), round(y / ds)
        lw_max, lh_max = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + w, lw_max), min(ly + h, lh_max)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            im = self._wsi.read_region((x0, y0), self._numbers[level], (x1 - x0, y1 - y0))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - wsidicom and pydicom raise their own
            raise SlideReadError(f"{self.info.path}: cannot read pixels ({exc})") from exc
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = np.asarray(im.convert("RGB"))
        return out

    def stored_thumbnail(self) -> np.ndarray | None:
        """The lowest pyramid level, whole, when it is small: a true overview of the
        tissue (not the series' overview photo or a sheared thumbnail)."""
        w, h = self.level_dimensions[-1]
        if max(w, h) > MAX_OVERVIEW_SIDE:
            return None
        return self.read_level(len(self.level_dimensions) - 1, 0, 0, w, h)

    def close(self) -> None:
        self._wsi.close()  # type: ignore[attr-defined]


def open_dicom(folder: Path, fallback: float | None, magnification: object) -> DicomSlide:
    """Open the DICOM WSI series in `folder`. `magnification(path, props, fallback)` turns
    an mpp (as OpenSlide's property) into the base magnification (cbir.slides.open)."""
    # wsidicom uses pydicom functions that pydicom marks deprecated, and pydicom logs each
    # use as a warning: not the user's concern. Its logger's level is set when pydicom is
    # imported, so it is lowered after that and before wsidicom is imported.
    warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v4")
    try:
        import pydicom  # noqa: F401

        logging.getLogger("pydicom").setLevel(logging.ERROR)
        from wsidicom import WsiDicom
    except ImportError as exc:
        raise SlideReadError(f"{folder}: reading DICOM slides needs wsidicom") from exc
    series = series_of(folder)
    if len(series) > 1:
        raise SlideReadError(
            f"{folder}: holds {len(series)} DICOM WSI series ({', '.join(sorted(series)[:3])}"
            f"{', ...' if len(series) > 3 else ''}); a slide is one series: one folder each"
        )
    try:
        wsi = WsiDicom.open(folder)
    except Exception as exc:  # noqa: BLE001
        raise SlideReadError(f"{folder}: not a readable DICOM WSI series ({exc})") from exc
    try:
        base = wsi.levels.base_level
        mpp = float(base.mpp.width) if base.mpp is not None else None
        props = {"openslide.mpp-x": str(mpp)} if mpp else {}
        mag, source, mpp = magnification(folder, props, fallback)  # type: ignore[operator]
        info = SlideInfo(
            path=str(folder.resolve()),
            name=folder.name,
            backend="dicom",
            width=base.size.width,
            height=base.size.height,
            level_count=len(list(wsi.levels)),
            base_magnification=mag,
            magnification_source=source,
            mpp=mpp,
            vendor="dicom",
        )
        return DicomSlide(wsi, info)
    except BaseException:
        wsi.close()
        raise
