#!/usr/bin/env python
"""Scale detection on real slides: does the bundle's scale comparator name the query's
magnification (Index.scale_probabilities), how long it takes, and where `--scale all`
puts hit 1.

    python tools/bench_scale.py --scale-weights scale.pt --json

Indexes the real SVS slides (../shared/data/wsi, base 20x where unstated) with the
given comparator, then queries with single tiles cut from the bottom 30% of each slide
(the part `cbir train scale` holds out) at each indexed magnification.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cbir
from cbir.slides import open_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/wsi"))
    parser.add_argument("--recipe", default="stats-lsh32")
    parser.add_argument("--queries-per-magnification", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    slides = sorted(args.data.glob("*.svs"))
    if not slides:
        print(f"bench_scale: no .svs slides in {args.data}", file=sys.stderr)
        raise SystemExit(2)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "idx"
        cbir.build_index(
            slides, out, args.recipe, scale_weights=args.scale_weights, base_magnification=20.0
        )
        with cbir.open_index(out, device="cpu") as index:
            queries = []  # (image, true magnification)
            for rec in index.slides.values():
                with open_slide(rec.info.path, rec.info.base_magnification) as slide:
                    height = slide.dimensions[1]
                    for mag in rec.magnifications:
                        grid = index.grids.get(rec.slide_id, mag)
                        rr, cc = np.nonzero(grid.valid)
                        bottom = (rr + 0.5) * grid.geometry.step > 0.7 * height
                        cells = np.flatnonzero(bottom)
                        for i in rng.permutation(cells)[: args.queries_per_magnification]:
                            x, y, w, h = grid.geometry.rect(int(rr[i]), int(cc[i]))
                            queries.append((slide.read_region(x, y, w, h, mag)[:224, :224], mag))
            search_s, comparator_s, hit1_true, best_is_true, near_true = [], [], [], [], []
            mags = index.magnifications
            for image, mag in queries:
                start = time.perf_counter()
                result = index.search(image, k=10)
                search_s.append(time.perf_counter() - start)
                hit1_true.append(bool(result.hits) and result.hits[0].magnification == mag)
                start = time.perf_counter()
                probs = index.scale_probabilities(image) or {}
                comparator_s.append(time.perf_counter() - start)
                best = max(probs, key=probs.get) if probs else None
                best_is_true.append(best == f"{mag:g}x")
                i = mags.index(mag)  # the true one or an indexed neighbour
                near_true.append(best in {f"{m:g}x" for m in mags[max(0, i - 1) : i + 2]})
            report = {
                "queries": len(queries),
                "magnifications": mags,
                "comparator_best_is_true_magnification": round(float(np.mean(best_is_true)), 4),
                "comparator_best_within_one_magnification": round(float(np.mean(near_true)), 4),
                "p50_ms": {
                    "search_all": round(1e3 * statistics.median(search_s), 3),
                    "comparator": round(1e3 * statistics.median(comparator_s), 3),
                },
                "search_all_hit1_at_true_magnification": round(float(np.mean(hit1_true)), 4),
                "note": "comparator on the CPU; --scale all searches every magnification",
            }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
