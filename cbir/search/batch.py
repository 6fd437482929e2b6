"""Batches of queries: every image of a folder, or the slide regions of a CSV
(`slide,x,y,w,h,magnification`, level-0 px). A bad row becomes an item carrying its error,
so the rest of a batch still runs."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cbir.search.query import Region

#: Files of a query folder that are searched (other files are left alone).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
#: Columns a CSV of region queries must have (level-0 pixels; magnification 20 or 20x,
#: or empty: the highest indexed one at which the region covers a tile).
CSV_COLUMNS = ("slide", "x", "y", "w", "h", "magnification")


@dataclass
class BatchItem:
    """One query of a batch: what to search (None when the row was unreadable), where it
    came from (`q.png`, `regions.csv line 4`) and why it could not be read."""

    source: str
    query: Path | Region | None
    error: str | None = None


def folder_queries(folder: Path) -> list[BatchItem]:
    """Every image of a folder (not its sub-folders), sorted by name."""
    from cbir.errors import QueryError

    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise QueryError(f"{folder}: no query images in this folder ({suffixes})")
    return [BatchItem(str(p), p) for p in images]


def csv_queries(path: Path) -> list[BatchItem]:
    """Regions of a CSV with a header naming slide,x,y,w,h,magnification (any order, other
    columns ignored). Slide paths are relative to the CSV's folder. A bad row becomes an
    item with its error; a bad header raises."""
    from cbir.errors import QueryError
    from cbir.search.query import Region

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"{path}: unreadable CSV ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in fields]
    if missing:
        raise QueryError(
            f"{path}: the header must name {','.join(CSV_COLUMNS)} (missing {', '.join(missing)})"
        )
    reader.fieldnames = fields
    items = []
    for row in reader:
        source = f"{path} line {reader.line_num}"
        values = {c: (row.get(c) or "").strip() for c in CSV_COLUMNS}
        if not any(values.values()):
            continue  # a blank line
        try:
            items.append(BatchItem(source, _region(values, path.parent, Region)))
        except ValueError as exc:
            items.append(BatchItem(source, None, str(exc)))
    if not items:
        raise QueryError(f"{path}: no regions (only a header)")
    return items


def _region(values: dict[str, str], folder: Path, region_type: type[Region]) -> Region:
    """A CSV row -> Region; ValueError saying which column is wrong."""
    if not values["slide"]:
        raise ValueError("no slide")
    numbers = {}
    for c in ("x", "y", "w", "h"):
        try:
            numbers[c] = int(values[c])
        except ValueError:
            raise ValueError(f"{c} {values[c]!r} is not a whole number of level-0 px") from None
        if numbers[c] < 0:
            raise ValueError(f"{c} {numbers[c]} is negative")
    from cbir.search.query import MIN_REGION_MAGNIFICATION

    mag_text = values["magnification"].lower().removesuffix("x")
    mag: float | None = None  # an empty cell: as --region without @MAGx
    if mag_text:
        try:
            mag = float(mag_text)
        except ValueError:
            raise ValueError(
                f"magnification {values['magnification']!r} is not a number (e.g. 20 or 20x)"
            ) from None
        if not (math.isfinite(mag) and mag >= MIN_REGION_MAGNIFICATION):
            raise ValueError(
                f"magnification {values['magnification']!r}: give one of at least "
                f"{MIN_REGION_MAGNIFICATION:g}x, or leave the cell empty"
            )
    slide = Path(values["slide"])
    if not slide.is_absolute() and (folder / slide).exists():
        slide = folder / slide
    return region_type(slide=str(slide), magnification=mag, **numbers)
