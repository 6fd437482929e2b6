"""Tile sets on disk: labelled (class sub-folders or a CSV) or unlabelled folders."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel

from cbir.errors import CbirError
from cbir.slides.open import decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class LabelledTiles(BaseModel):
    paths: list[str]
    labels: list[str]


def load_labelled_tiles(root: Path, labels_csv: Path | None = None) -> LabelledTiles:
    """Tiles and their classes: from a CSV with columns path,label (paths relative to
    the CSV's folder), else `root/labels.csv` if present, else one sub-folder per class."""
    root = Path(root)
    if not root.is_dir():
        raise CbirError(f"{root}: not a folder of labelled tiles")
    csv_path = labels_csv or (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    paths, labels = [], []
    if csv_path is not None:
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = [f.strip().lower() for f in reader.fieldnames or []]
                if not {"path", "label"} <= set(header):
                    raise CbirError(
                        f"{csv_path}: expected a CSV with columns path,label; its header is "
                        f"{','.join(reader.fieldnames or [])[:200] or 'empty'}"
                    )
                reader.fieldnames = header
                seen: dict[str, str] = {}
                twice = 0
                for row in reader:
                    path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
                    if not path or not label:
                        raise CbirError(
                            f"{csv_path} line {reader.line_num}: needs a path and a label"
                        )
                    full = str((csv_path.parent / path).resolve())
                    if full in seen:  # twice: it would find itself, or train and test at once
                        if seen[full] != label:
                            raise CbirError(
                                f"{csv_path} line {reader.line_num}: {path} is labelled "
                                f"{seen[full]!r} above and {label!r} here"
                            )
                        twice += 1
                        continue
                    seen[full] = label
                    paths.append(full)
                    labels.append(label)
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise CbirError(f"{csv_path}: expected a CSV with columns path,label ({exc})") from exc
        if twice:
            logging.getLogger("cbir").warning(
                "%s: %d rows repeat a tile listed above; each tile is used once", csv_path, twice
            )
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(str(f.resolve()))
                    labels.append(folder.name)
    if len(set(labels)) < 2:
        raise CbirError(f"{root}: found {len(paths)} tiles in {len(set(labels))} classes; need 2+")
    return LabelledTiles(paths=paths, labels=labels)


def read_tiles(paths: list[str], tile_size: int) -> np.ndarray:
    """Decode tiles -> (n, t, t, 3) uint8, resized (INTER_AREA) where not t x t already."""
    out = np.empty((len(paths), tile_size, tile_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        image = decode_image(Path(p))
        if image.shape[:2] != (tile_size, tile_size):
            image = cv2.resize(image, (tile_size, tile_size), interpolation=cv2.INTER_AREA)
        out[i] = image
    return out


def load_tiles(root: Path, labels_csv: Path | None = None) -> LabelledTiles:
    """Labelled tiles when `root` has labels (CSV or class sub-folders), else every image
    under `root` (recursively) with the label "" (for unsupervised training)."""
    try:
        return load_labelled_tiles(root, labels_csv)
    except CbirError:
        if labels_csv is not None or not Path(root).is_dir():
            raise
    paths = sorted(
        str(p.resolve()) for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise CbirError(f"{root}: no image tiles found")
    return LabelledTiles(paths=paths, labels=[""] * len(paths))
