#!/usr/bin/env python
"""Scale detection on real slides: is the query's magnification among those `--scale auto`
searches, and how long a query takes with `--scale auto` vs `--scale all`.

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
            times: dict[str, list[float]] = {"all": [], "auto": []}
            top1: dict[str, list[bool]] = {"all": [], "auto": []}
            contains, best_is_true, chosen_sizes = [], [], []
            for image, mag in queries:
                for mode in ("all", "auto"):
                    start = time.perf_counter()
                    result = index.search(image, k=10, scale=mode)
                    times[mode].append(time.perf_counter() - start)
                    top1[mode].append(bool(result.hits) and result.hits[0].magnification == mag)
                    if mode == "auto":
                        contains.append(mag in result.searched_magnifications)
                        probs = result.scale_probabilities or {}
                        best_is_true.append(max(probs, key=probs.get) == f"{mag:g}x")
                        chosen_sizes.append(len(result.searched_magnifications))
            report = {
                "queries": len(queries),
                "magnifications": index.magnifications,
                "auto_contains_true_magnification": round(float(np.mean(contains)), 4),
                "auto_best_is_true_magnification": round(float(np.mean(best_is_true)), 4),
                "auto_magnifications_searched_mean": round(float(np.mean(chosen_sizes)), 2),
                "p50_ms": {m: round(1e3 * statistics.median(t), 3) for m, t in times.items()},
                "hit1_at_true_magnification": {
                    m: round(float(np.mean(v)), 4) for m, v in top1.items()
                },
                "note": "p50_ms of auto includes the comparator (CPU); all searches every "
                "magnification of the bundle",
            }
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
