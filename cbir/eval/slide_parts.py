"""A labelled slide set made from a few real slides: each source slide is cut into
non-overlapping parts, each part written as its own pyramidal TIFF slide labelled by its
source, and parts grouped into cases. What `cbir evaluate --slides` measures on when no
archive of labelled slides is at hand: a part should find its siblings first."""

from __future__ import annotations

import csv
from pathlib import Path

from cbir.slides import open_slide
from cbir.slides.sample import write_pyramidal_tiff

#: um/px assumed at 20x for a source slide that states no mpp.
MPP_AT_20X = 0.5


def write_slide_parts(
    source: Path, out_dir: Path, label: str, rows: int, cols: int, per_case: int = 1
) -> list[tuple[Path, str, str]]:
    """Cut `source`'s level 0 into rows x cols parts written to `out_dir` as
    `{label}-{n}.tif` (row-major n); every `per_case` consecutive parts are one case
    `{label}-case{c}`. Returns (path, label, case) per part."""
    with open_slide(source) as slide:
        info = slide.info
        image = slide.read_region(0, 0, info.width, info.height, info.base_magnification)
    mpp = info.mpp or MPP_AT_20X * 20 / info.base_magnification
    h, w = image.shape[0] // rows, image.shape[1] // cols
    out = []
    for n in range(rows * cols):
        r, c = divmod(n, cols)
        part = image[r * h : (r + 1) * h, c * w : (c + 1) * w]
        path = write_pyramidal_tiff(out_dir / f"{label}-{n}.tif", part.copy(), mpp=mpp)
        out.append((path, label, f"{label}-case{n // per_case}"))
    return out


def write_labels_csv(parts: list[tuple[Path, str, str]], path: Path) -> Path:
    """The labels CSV of `cbir evaluate --slides`: slide (file name), label, case."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["slide", "label", "case"])
        for p, label, case in parts:
            writer.writerow([p.name, label, case])
    return path
