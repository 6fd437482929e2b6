#!/usr/bin/env python
"""Two-step (coarse Hamming top-K, fine squared-L2 rerank) tile-query latency at scale.

    python tools/bench_rerank.py --n 1000000 --json

Builds the synthetic collection of bench_search.py (smooth, clustered 12-d descriptors;
not real slides) with stats-lsh32 plus `rerank`, so each tile's descriptor is kept in
LMDB; then times single queries (descriptor of a random tile plus noise) through
`tile_hits` with K = 100 and K = 1000, metadata lookup included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_search import synthetic_slides  # same folder

import cbir
from cbir.pipeline import TilePipeline
from cbir.recipes import load_recipe
from cbir.search.tiles import tile_hits
from cbir.storage.store import write_new_bundle
from cbir.storage.writer import transaction
from cbir.timing import StageTimer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ks", default="100,1000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    base = load_recipe("stats-lsh32")
    recipe = base.model_copy(
        update={
            "name": "stats-lsh32-rerank",
            "search": base.search.model_copy(update={"rerank": max(ks)}),
        }
    )
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "idx"
        t0 = time.perf_counter()
        with transaction(root, create=True, overwrite=True) as writer:
            write_new_bundle(
                writer,
                recipe,
                TilePipeline(recipe),
                synthetic_slides(args.n, args.seed),
                StageTimer(),
            )
        build = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        with cbir.open_index(root) as index:
            meta, pipe = index.bundle.meta, index.bundle.pipeline
            ids = np.concatenate([g.ids[g.valid] for g in meta.all_grids()])
            pick = rng.choice(ids, args.queries, replace=False)
            x = meta.vectors_of(pick, 12) + rng.normal(0, 0.05, (args.queries, 12)).astype(
                np.float32
            )
            codes = pipe.encode(x)
            out = {
                "n": args.n,
                "queries": args.queries,
                "build_seconds": round(build, 2),
                "bytes_per_tile": round(size / args.n, 1),
                "codes": "synthetic (bench_search.py), not real slides",
            }
            plain = []
            for i in range(args.queries):
                s = time.perf_counter()
                index.search_codes(codes[i : i + 1].reshape(1, 1, -1), 10)
                plain.append(time.perf_counter() - s)
            out["hamming_only_p50_ms"] = round(1e3 * float(np.median(plain)), 3)
            for k in ks:
                index.recipe = recipe.model_copy(
                    update={"search": recipe.search.model_copy(update={"rerank": k})}
                )
                found, times = 0, []
                for i in range(args.queries):
                    s = time.perf_counter()
                    hits = tile_hits(index.collection, codes[i : i + 1], 10, x[i : i + 1])
                    times.append(time.perf_counter() - s)
                    found += bool(hits) and hits[0].tile_id == int(pick[i])
                out[f"rerank_{k}"] = {
                    "p50_ms": round(1e3 * float(np.median(times)), 3),
                    "p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
                    "source_tile_at_rank_1": round(found / args.queries, 4),
                }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
