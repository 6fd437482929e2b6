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
    """Files as given; directories expand to the slide and image files inside them."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES))
        else:
            out.append(p)
    return out
