#!/usr/bin/env python
"""Geometric verification time (RANSAC affine, OpenCV): per candidate pair and per query.

    python tools/bench_verify.py --json

Matches are synthetic: keypoints of an image and of its rotated, scaled, shifted copy
with 40% wrong matches (a hard but typical DELF case). Target: <= 5 ms per pair.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cbir.delf.verify import verify_matches


def pair(rng: np.random.Generator, n: int, outliers: float) -> tuple[np.ndarray, np.ndarray]:
    q = rng.uniform(0, 1024, (n, 2))
    a = 0.7 * np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    c = q @ a.T + np.array([60.0, -40.0])
    bad = rng.random(n) < outliers
    c[bad] = rng.uniform(0, 1024, (int(bad.sum()), 2))
    return q, c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--outliers", type=float, default=0.4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    verify_matches(*pair(rng, 100, args.outliers))  # warm-up
    out: dict[str, object] = {"outlier_fraction": args.outliers, "pairs": args.pairs}
    for n in (50, 100, 300, 1000):
        data = [pair(rng, n, args.outliers) for _ in range(args.pairs)]
        times = []
        for q, c in data:
            start = time.perf_counter()
            verify_matches(q, c)
            times.append(time.perf_counter() - start)
        out[f"matches_{n}"] = {
            "p50_ms": round(1e3 * float(np.median(times)), 3),
            "p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
        }
    data = [pair(rng, 100, args.outliers) for _ in range(100)]
    start = time.perf_counter()
    for q, c in data:
        verify_matches(q, c)
    out["query_top100_candidates_100_matches_ms"] = round(1e3 * (time.perf_counter() - start), 1)
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
