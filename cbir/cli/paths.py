"""Slide arguments: files as given, folders expanded to the slides and images inside."""

from __future__ import annotations

from pathlib import Path

SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".png",
    ".jpg",
    ".jpeg",
}


def expand_slides(paths: list[Path]) -> list[Path]:
    """Files as given; a DICOM WSI folder is one slide (and may hold nothing else); other
    directories expand to the slide and image files and the DICOM WSI folders inside
    them. A directory with none is an error naming it (CbirError)."""
    from cbir.errors import CbirError
    from cbir.slides.dicom_slide import is_dicom_folder

    out: list[Path] = []
    for p in paths:
        if is_dicom_folder(p):
            others = sorted(
                f.name
                for f in p.iterdir()
                if (f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES) or is_dicom_folder(f)
            )
            if others:  # it was read as one DICOM slide and these were dropped unsaid
                raise CbirError(
                    f"{p}: holds DICOM files and other slides ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); a DICOM WSI folder holds one "
                    "series and nothing else: move them to folders of their own"
                )
            out.append(p)
        elif p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if (f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES) or is_dicom_folder(f)
            )
            if not found:
                suffixes = ", ".join(sorted(SLIDE_SUFFIXES))
                raise CbirError(
                    f"{p}: no slide or image files in this folder ({suffixes}), nor DICOM "
                    "WSI folders"
                )
            out.extend(found)
        else:
            out.append(p)
    return out
