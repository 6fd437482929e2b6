#!/usr/bin/env python
"""Warm query latency by query size: how long does a user wait for a rectangle?

    python tools/bench_query.py --recipe effnet-flat [--sides 224,448,672,900] [--n 20]
        [--seed 0] [--workdir DIR] [--reuse] [--threads N] --json

Protocol: the bundle of tools/eval_queries.py (cmu-1-small-region.svs and
tcga-cr-7395-01a-01-ts1.svs of ../shared/data/wsi, built with the recipe into
--workdir/<recipe>; --reuse keeps one already there). Per side, --n square tissue
rectangles of side x side output px at a random indexed magnification (eval_queries.draw,
default_rng(--seed)) are read into memory first; then each is searched as an image
(`Index.search(array, k=10)`) after one unmeasured warm-up search. Reported per side: wall
ms p50 / p90 / max of the search call, and of its describing alone (`Index.tile_codes` of
the query's tiles, measured on the same arrays right after), the tiles described, and the
CPU seconds other processes used meanwhile (a busy machine shows there). --threads sets
torch's intra-op threads (default: torch's, the cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import CpuMeter, log
from eval_offgrid import DATA, SLIDES, open_bundle
from eval_queries import draw

from cbir.api import Index
from cbir.search.query import fit_to_tile, query_tiles, read_region_image


def bench_side(index: Index, side: int, args: argparse.Namespace) -> dict[str, Any]:
    recs = [r for r in index.slides.values() if r.magnifications]
    rng = np.random.default_rng(args.seed + side)
    rects = [draw(recs, rng, side, side) for _ in range(args.n)]
    images = [read_region_image(r.region, r.record.info.base_magnification) for r in rects]
    t = index.recipe.tiling.tile_size
    index.search(images[0], k=10)  # warm-up: first-call allocations, grids read
    meter = CpuMeter()
    total, describe, tiles = [], [], []
    for image in images:
        start = time.perf_counter()
        index.search(image, k=10)
        total.append(1e3 * (time.perf_counter() - start))
        q = query_tiles(fit_to_tile(image, t, "q")[0], t, "q")
        start = time.perf_counter()
        index.tile_codes(q)
        describe.append(1e3 * (time.perf_counter() - start))
        tiles.append(q.shape[0] * q.shape[1])

    def stats(ms: list[float]) -> dict[str, float]:
        return {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p90": round(float(np.percentile(ms, 90)), 1),
            "max": round(float(np.max(ms)), 1),
        }

    out = {
        "side_px": side,
        "n": len(images),
        "tiles_described": sorted(set(tiles)),
        "search_ms": stats(total),
        "describe_ms": stats(describe),
        "other_cpu_seconds": meter.other_seconds(),
    }
    log("query", f"{side} px: search p50 {out['search_ms']['p50']} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="effnet-flat")
    parser.add_argument("--sides", default="224,448,672,900")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "cbir-queries"))
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    missing = [str(p) for p in SLIDES if not p.is_file()]
    if missing:
        print(f"bench_query: {DATA} not found ({', '.join(missing)})", file=sys.stderr)
        raise SystemExit(2)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = Path(args.workdir) / Path(args.recipe).stem
    index, build_s = open_bundle(root, args.recipe, None, args.reuse, None)
    with index:
        rows = [bench_side(index, int(s), args) for s in args.sides.split(",") if s]
    import torch

    out = {
        "recipe": args.recipe,
        "build_seconds": build_s,
        "torch_threads": torch.get_num_threads(),
        "by_side": rows,
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
