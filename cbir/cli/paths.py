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
    """Files as given; directories expand to the slide and image files inside them.
    A directory with none is an error naming it (CbirError)."""
    from cbir.errors import CbirError

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES)
            if not found:
                suffixes = ", ".join(sorted(SLIDE_SUFFIXES))
                raise CbirError(f"{p}: no slide or image files in this folder ({suffixes})")
            out.extend(found)
        else:
            out.append(p)
    return out
