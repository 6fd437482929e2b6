#!/usr/bin/env python
"""Queries as users make them: random rectangles of real slides, transformed, searched as
images. Are they found at their place?

    python tools/eval_queries.py --recipes effnet-flat[,stats-lsh32] [--n 60] [--seed 0]
        [--transforms none,fliplr,rot90,...] [--orientations] [--scale all|20x]
        [--workdir DIR] [--reuse] --json

Protocol: per recipe, ONE bundle of cmu-1-small-region.svs and tcga-cr-7395-01a-01-ts1.svs
(../shared/data/wsi, built as tools/eval_offgrid.py builds it). --n rectangles are drawn
with numpy default_rng(--seed): a random slide, a random indexed magnification of it, a
width and a height each uniform in [--min-side, --max-side] output px (redrawn when it does
not fit the slide), a random level-0 position (any offset) with >= 50% tissue
(`cbir.slides.tissue.tissue_mask` of its pixels) and tissue at its centre pixel. Its pixels
are read at that magnification; then each transform makes one query of it:

    none, fliplr, rot90, rot180, rot270          the array flipped or turned
    jpeg90, jpeg70, jpeg50                       saved and re-read as JPEG of that quality
    colour                                       brightness x0.92 and a +6 shift of red
    unindexed-mag                                the pixels read instead at the midpoint
                                                 between the magnification and the next
                                                 indexed one up (between two indexed
                                                 scales; the rectangle is the same)
    region-unindexed-mag                         that rectangle and magnification as a
                                                 region query (slide:x,y,w,h@MAGx): the
                                                 engine knows its magnification

Each query but the last is an image (`Index.search(array, k=10)`, with `orientations=True` under
--orientations), so nothing tells the engine where it came from. found@1: hit 1 is on the
rectangle's slide and its level-0 rectangle overlaps the true one with IoU >= 0.5;
found@5: one of the first five is. A query the engine refuses (a `CbirError`) counts as
not found (`errors`, by exception type). Query ms: wall time of the search call (the
array is in memory).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import log
from eval_offgrid import DATA, SLIDES, key_values, open_bundle, rate, timed_search
from PIL import Image

from cbir.api import Index
from cbir.search.hits import Hit, iou
from cbir.search.query import Region, read_region_image
from cbir.slides.tissue import tissue_mask
from cbir.storage.metadata import SlideRecord

TRANSFORMS = (
    "none", "fliplr", "rot90", "rot180", "rot270", "jpeg90", "jpeg70", "jpeg50", "colour",
    "unindexed-mag", "region-unindexed-mag",
)  # fmt: skip
MIN_TISSUE, MAX_TRIES, K, MIN_IOU = 0.5, 200, 10, 0.5


@dataclass(frozen=True)
class Rect:
    """A drawn rectangle: its region (level-0 px, the magnification it was read at), the
    slide's record and the next indexed magnification up (None: none)."""

    region: Region
    record: SlideRecord
    next_mag: float | None


def draw(recs: list[SlideRecord], rng: np.random.Generator, lo: int, hi: int) -> Rect:
    """One random tissue rectangle (see the protocol)."""
    for _ in range(MAX_TRIES):
        rec = recs[int(rng.integers(len(recs)))]
        mags = sorted(rec.magnifications)
        mag = float(rng.choice(mags))
        per_px = rec.info.base_magnification / mag  # level-0 px per output px
        w = round(int(rng.integers(lo, hi + 1)) * per_px)
        h = round(int(rng.integers(lo, hi + 1)) * per_px)
        if w > rec.info.width or h > rec.info.height:
            continue
        for _ in range(MAX_TRIES):
            x = int(rng.integers(0, rec.info.width - w + 1))
            y = int(rng.integers(0, rec.info.height - h + 1))
            region = Region(slide=rec.info.path, x=x, y=y, w=w, h=h, magnification=mag)
            mask = tissue_mask(read_region_image(region, rec.info.base_magnification))
            if mask.mean() >= MIN_TISSUE and mask[mask.shape[0] // 2, mask.shape[1] // 2]:
                up = [m for m in mags if m > mag]
                return Rect(region, rec, up[0] if up else None)
    raise RuntimeError("eval_queries: no tissue rectangle found within the allowed tries")


def query(rect: Rect, transform: str) -> np.ndarray | Region | None:
    """The query image (or region) of a rectangle under a transform (None: it does not
    apply)."""
    region, base = rect.region, rect.record.info.base_magnification
    if transform.endswith("unindexed-mag"):
        if rect.next_mag is None:
            return None
        mid = region.model_copy(
            update={"magnification": (region.magnification + rect.next_mag) / 2}
        )
        return mid if transform.startswith("region") else read_region_image(mid, base)
    pixels = read_region_image(region, base)
    if transform == "fliplr":
        return np.ascontiguousarray(pixels[:, ::-1])
    if transform.startswith("rot"):
        return np.ascontiguousarray(np.rot90(pixels, int(transform[3:]) // 90))
    if transform.startswith("jpeg"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=int(transform[4:]))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    if transform == "colour":
        shifted = pixels.astype(np.float32) * 0.92
        shifted[..., 0] += 6
        return np.clip(shifted, 0, 255).astype(np.uint8)
    return pixels


def at_place(hit: Hit, rect: Rect) -> bool:
    return hit.slide_id == rect.record.slide_id and iou(hit, rect.region) >= MIN_IOU


def evaluate(recipe: str, weights: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.workdir) / Path(recipe).stem
    index, build_s = open_bundle(root, recipe, weights, args.reuse, None)
    with index:
        return {"recipe": recipe, "build_seconds": build_s, **run_queries(index, args)}


def run_queries(index: Index, args: argparse.Namespace) -> dict[str, Any]:
    recs = [r for r in index.slides.values() if r.magnifications]
    rng = np.random.default_rng(args.seed)
    rects = [draw(recs, rng, args.min_side, args.max_side) for _ in range(args.n)]
    per: dict[str, Any] = {}
    for transform in args.transforms:
        found1, found5, ms, ious = [], [], [], []
        errors: Counter[str] = Counter()
        for rect in rects:
            image = query(rect, transform)
            if image is None:
                continue
            hits, took = timed_search(
                functools.partial(
                    index.search, image, k=K, orientations=args.orientations, scale=args.scale
                ),
                errors,
                f"queries: {transform}",
            )
            ms.append(took)
            found1.append(bool(hits) and at_place(hits[0], rect))
            found5.append(any(at_place(h, rect) for h in hits[:5]))
            if hits and hits[0].slide_id == rect.record.slide_id:
                ious.append(iou(hits[0], rect.region))
        per[transform] = {
            "found_at_1": rate(found1),
            "found_at_5": rate(found5),
            "median_iou_of_hit_1_on_its_slide": round(float(np.median(ious)), 3) if ious else None,
            "query_ms_p50": round(float(np.percentile(ms, 50)), 1) if ms else None,
            "errors": dict(errors),
            "n": len(found1),
        }
        log("queries", f"{transform}: found@1 {per[transform]['found_at_1']}")
    sides = [(r.region.w, r.region.h) for r in rects]
    return {
        "n_rectangles": len(rects),
        "level0_sides_median": np.median(sides, 0).tolist(),
        "by_transform": per,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="effnet-flat", help="comma separated")
    parser.add_argument("--weights", action="append", default=[], metavar="RECIPE=PATH")
    parser.add_argument("--transforms", default=",".join(TRANSFORMS))
    parser.add_argument("--n", type=int, default=60, help="rectangles (each transformed)")
    parser.add_argument("--min-side", type=int, default=160, help="output px")
    parser.add_argument("--max-side", type=int, default=900, help="output px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "cbir-queries"))
    parser.add_argument("--reuse", action="store_true", help="reuse a bundle in --workdir")
    parser.add_argument("--orientations", action="store_true", help="search 8 orientations")
    parser.add_argument("--scale", default="all", help="all, or one magnification (20x)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.transforms = [t for t in args.transforms.split(",") if t]
    unknown = sorted(set(args.transforms) - set(TRANSFORMS))
    if unknown:
        raise SystemExit(f"eval_queries: unknown transform(s) {', '.join(unknown)}")
    missing = [str(p) for p in SLIDES if not p.is_file()]
    if missing:
        print(f"eval_queries: {DATA} not found ({', '.join(missing)})", file=sys.stderr)
        raise SystemExit(2)
    weights = {k: Path(v) for k, v in key_values(args.weights, "--weights").items()}
    results = [evaluate(r, weights.get(r), args) for r in args.recipes.split(",") if r]
    out = {
        "seed": args.seed,
        "scale": args.scale,
        "sides_px": [args.min_side, args.max_side],
        "orientations": args.orientations,
        "results": results,
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
