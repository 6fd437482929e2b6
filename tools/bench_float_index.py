#!/usr/bin/env python
"""Compressed float indexes for the pretrained features against exact Flat: recall@10,
latency, bytes per tile, build and add time.

What is measured
    `--n` unit vectors of 552 dimensions (effnet's descriptor size), synthetic: a 16-d
    latent through a random ReLU layer plus noise, standardised and L2-normalised (low
    intrinsic dimension like a network's features, not real slides). `--queries` stored
    vectors, moved slightly, are the queries; exact Flat gives their true 10 nearest.
    For each factory (`--factories`, cbir's `float_factory` strings, `{nlist}` resolved
    as a bundle resolves it), the index is trained (on a seeded sample, as cbir trains
    it) and filled, then each query runs alone, as `cbir search` runs one: top `--rerank`
    candidates from the index, reordered by exact squared L2 against the stored float32
    vectors (a bundle reads them from its grids; here an array in memory, so LMDB reads
    are not timed), top 10 kept. Reported: recall@10 against Flat, p50 / p99 ms of the
    whole single query (index + rerank) and of the index search alone, index bytes a
    tile (serialised), train and add seconds. Flat's own single-query p50 is the baseline.

Run (from the repository root, with the venv active)
    python tools/bench_float_index.py --n 1000000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from benchutil import log as _log

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cbir.index.float import FloatTileIndex, float_factory  # noqa: E402
from cbir.recipes import load_recipe  # noqa: E402

DIM = 552


def log(msg: str) -> None:
    _log("bench_float_index", msg)


def vectors(n: int, seed: int, chunk: int = 200_000) -> np.ndarray:
    """(n, DIM) float32 unit vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, DIM)).astype(np.float32)
    x = np.empty((n, DIM), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.standard_normal((m, 16)).astype(np.float32)
        x[start : start + m] = np.maximum(z @ w1, 0) @ w2
        x[start : start + m] += 2.0 * rng.standard_normal((m, DIM)).astype(np.float32)
    x -= x.mean(axis=0)
    x /= x.std(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def ms(times: list[float]) -> dict[str, float]:
    a = 1000 * np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def bench(
    factory: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, rerank: int, nprobe: int
) -> dict:
    recipe = load_recipe("effnet-ivfpq")
    cfg = recipe.index.model_copy(
        update={"float_factory": factory, "ivf_threshold": 1, "nprobe": nprobe}
    )
    resolved = float_factory(cfg, len(x))
    t = time.perf_counter()
    index = FloatTileIndex.template(DIM, cfg, x)
    train = time.perf_counter() - t
    t = time.perf_counter()
    ids = np.arange(len(x), dtype=np.int64)
    for start in range(0, len(x), 200_000):
        index.add(x[start : start + 200_000], ids[start : start + 200_000])
    add = time.perf_counter() - t
    size = len(faiss.serialize_index(index.index))
    whole, alone, found = [], [], []
    approximate = index.approximate
    for i in range(len(q)):
        t0 = time.perf_counter()
        D, I = index.search(q[i : i + 1], rerank if approximate else 10)
        t1 = time.perf_counter()
        cand = I[0][I[0] >= 0]
        if approximate:
            d = ((x[cand].astype(np.float64) - q[i].astype(np.float64)) ** 2).sum(axis=1)
            cand = cand[np.lexsort((cand, d))[:10]]
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        alone.append(t1 - t0)
        found.append(len(set(cand[:10].tolist()) & set(truth[i].tolist())) / 10)
    out = {
        "factory": resolved,
        "rerank": rerank if approximate else None,
        "nprobe": nprobe if index.nlist else None,
        "recall_at_10": round(float(np.mean(found)), 4),
        "query": ms(whole),
        "index_search": ms(alone),
        "index_bytes_per_tile": round(size / len(x), 1),
        "train_seconds": round(train, 1),
        "add_seconds": round(add, 1),
    }
    log(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--factories", default="Flat,IVF{nlist},PQ138x4fs,IVF{nlist},PQ46x4fs", help="';'-free list"
    )
    parser.add_argument("--rerank", type=int, default=256)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t = time.perf_counter()
    x = vectors(args.n, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    q = x[rng.choice(args.n, args.queries, replace=False)]
    q = q + 0.01 * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    log(f"{args.n} vectors in {time.perf_counter() - t:.0f} s")
    flat = faiss.IndexFlatL2(DIM)
    flat.add(x)
    _, truth = flat.search(q, 10)
    del flat
    factories = [
        f for f in args.factories.replace(",IVF", ";IVF").replace(",Flat", ";Flat").split(";") if f
    ]
    rows = [bench(f, x, q, truth, args.rerank, args.nprobe) for f in factories]
    out = {
        "n": args.n,
        "dim": DIM,
        "queries": args.queries,
        "data": "synthetic (see docstring)",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
