#!/usr/bin/env python
"""Slide-query benchmark: `Index.search_slide` latency on a synthetic collection of
`--slides` slides of `--tiles` tiles each (default 1,000 x 50,000 = 5e7 tiles), 32-bit
binary codes (stats-lsh32), written through the real bundle code path.

How the collection is made
    Each slide is one 20x grid of about `--tiles` cells, every cell kept; its 12-d
    descriptors come from tools/bench_search.py's generator (3-6 of 16 shared "tissue
    types" mixed by smooth random fields, plus texture and noise), so slides differ and
    neighbouring tiles are alike. The recipe's LSH is fitted and encodes them; the Faiss
    index stays exact (flat: the slide query does not use it); each slide's mosaic is
    chosen by place at store time (no thumbnail colours) and its pooled vector stored.

What is timed
    `--queries` indexed slides (evenly spaced ids) are each the query of
    `Index.search_slide(id, k=10, method=M)` for every method: "pooled" (the coarse
    stage alone, the default), "median" (median-of-minimum from the mosaic to every tile
    of the first 100 slides) and "mosaic" (to their mosaic tiles). The first query of
    each method is reported apart (cold: grids read from LMDB); p50 / p99 are over all.

Run (from the repository root, with the venv active)
    python tools/bench_slide_search.py --json                      # 1,000 x 50,000
    python tools/bench_slide_search.py --slides 50 --tiles 5000    # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import benchutil
import numpy as np
from bench_search import DIM, N_TYPES, synthetic_descriptors, synthetic_slide

import cbir
from cbir.pipeline import TilePipeline
from cbir.recipes import load_recipe
from cbir.storage.store import write_new_bundle
from cbir.storage.writer import transaction
from cbir.timing import StageTimer


def log(msg: str) -> None:
    benchutil.log("bench_slide_search", msg)


def slides(n: int, tiles: int, seed: int):  # type: ignore[no-untyped-def]
    """DescribedSlide objects, one at a time (n of about `tiles` tiles each)."""
    rng = np.random.default_rng(seed)
    types = rng.standard_normal((N_TYPES, DIM)).astype(np.float32)
    side = math.isqrt(tiles)
    rows, cols = side, -(-tiles // side)
    for i in range(n):
        keep = np.ones((rows, cols), dtype=bool)
        yield synthetic_slide(i, keep, synthetic_descriptors(rng, types, rows, cols))


def build(root: Path, n: int, tiles: int, seed: int, batch: int) -> dict[str, object]:
    """Write the collection: the first `batch` slides make the bundle, the rest are added
    `batch` at a time (each add one segment), so memory stays at one batch."""
    from cbir.indexer import add_described

    recipe = load_recipe("stats-lsh32")
    recipe = recipe.model_copy(
        update={"index": recipe.index.model_copy(update={"ivf_threshold": 10**12})}
    )
    timer = StageTimer()
    t0 = time.perf_counter()
    gen = slides(n, tiles, seed)
    first = [next(gen) for _ in range(min(batch, n))]
    with transaction(root, create=True, overwrite=True) as writer:
        write_new_bundle(writer, recipe, TilePipeline(recipe), first, timer)
    done = len(first)
    while done < n:
        chunk = [next(gen) for _ in range(min(batch, n - done))]
        with transaction(root, create=False) as writer:
            add_described(writer, chunk, timer, compact=False)
            writer.commit(recipe)
        done += len(chunk)
        log(f"{done} slides written ({time.perf_counter() - t0:.0f} s)")
    return {"build_seconds": round(time.perf_counter() - t0, 1), "stages": timer.as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--tiles", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50, help="slides written per segment")
    parser.add_argument("--methods", default="pooled,median,mosaic")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="reuse / keep the bundle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-slides-"))
    root = work / f"slides-{args.slides}x{args.tiles}"
    out: dict[str, object] = {"slides": args.slides, "tiles_per_slide": args.tiles}
    if not (args.keep and (root / "manifest.json").is_file()):
        out |= build(root, args.slides, args.tiles, args.seed, args.batch)
    with cbir.open_index(root, device="cpu") as ix:
        out["tiles"] = sum(r.tiles for r in ix.slides.values())
        ids = sorted(ix.slides)
        queries = [ids[i] for i in np.linspace(0, len(ids) - 1, args.queries).astype(int)]
        for method in args.methods.split(","):
            seconds, first_hits = [], []
            for q in queries:
                t = time.perf_counter()
                r = ix.search_slide(q, k=10, method=method)
                seconds.append(time.perf_counter() - t)
                first_hits.append(r.hits[0].slide_id == q)
            ms = np.asarray(seconds) * 1e3
            out[method] = {
                "cold_ms": round(float(ms[0]), 1),
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1),
                "self_first": float(np.mean(first_hits)),
                "candidates": r.candidates,
            }
            log(f"{method}: {out[method]}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
