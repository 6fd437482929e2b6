#!/usr/bin/env python
"""What re-ranking and whitening add to a frozen recipe on tiles-crc9 (no training).

    python tools/eval_crc9_rerank.py --json [--recipe effnet-quad-flat] [--data DIR]

Protocol: `cbir evaluate --tiles`'s, leave-one-out over all 139 tiles: the recipe's
encoder is fitted on them (standardisation, no labels) and every tile queries the others
by squared L2 on its unit vectors; seed-000 MAP@10 (class means). On those vectors:
- `alpha_qe`: the query replaced by its alpha-QE with its 3 nearest (alpha 3, as the
  recipes' `expand`);
- `whiten`: PCA whitening fitted on the 139 vectors (dims, eigenvalue power), re-normalised;
- `dba`: database-side augmentation (each database vector the similarity^3-weighted mean
  of itself and its k nearest, computed without the query), then alpha-QE 3;
- `k_reciprocal`: Zhong et al. 2017 (CVPR) re-ranking on the query and the database
  (k1, k2, lambda).
A measurement for the record (issue 23's MAP@10 >= 0.90 goal), not a recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from cbir.eval.harness import l2_ranking, leave_one_out_order
from cbir.eval.metrics import seed_map_at_k
from cbir.pipeline import TilePipeline
from cbir.recipes import load_recipe
from cbir.search.expansion import expand_query, expanded_leave_one_out
from cbir.slides.tileset import load_labelled_tiles, read_tiles


def seed_map(order: np.ndarray, labels: np.ndarray) -> float:
    """Seed-000 MAP@10 of leave-one-out orders (n, n - 1): the mean of class means."""
    per: dict[str, list[float]] = defaultdict(list)
    for q, label in enumerate(labels):
        per[str(label)].append(seed_map_at_k(labels[order[q]] == label, 10))
    return round(float(np.mean([np.mean(v) for v in per.values()])), 4)


def unit(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def whitened(z: np.ndarray, dims: int, power: float) -> np.ndarray:
    """(n, d) -> (n, dims): PCA whitening fitted on z, eigenvalues to -power, unit rows."""
    centred = z - z.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    top = np.argsort(values)[::-1][:dims]
    return unit(centred @ vectors[:, top] / (values[top] + 1e-6) ** power)


def dba_order(z: np.ndarray, k: int, qe: int = 3, alpha: float = 3.0) -> np.ndarray:
    """Leave-one-out orders after database-side augmentation (without the query) and
    alpha-QE of the query against the augmented database."""
    n = len(z)
    everyone = np.arange(n)
    order = np.empty((n, n - 1), dtype=np.int64)
    for q in range(n):
        keep = everyone[everyone != q]
        db = z[keep]
        sim = db @ db.T
        nearest = np.argsort(-sim, axis=1)[:, : k + 1]  # itself first
        weights = np.take_along_axis(sim, nearest, 1).clip(0) ** alpha
        db = unit((weights[..., None] * db[nearest]).sum(1))
        query = z[q]
        if qe:
            query = expand_query(query, db[np.argsort(-(db @ query))[:qe]], alpha)
        order[q] = keep[np.lexsort((keep, -(db @ query)))]
    return order


def k_reciprocal(z: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """(n, n) re-ranked distances of unit vectors z (Zhong et al. 2017, their reference
    implementation's steps: k-reciprocal sets expanded by half-size ones, Gaussian
    weights, local query expansion over k2, Jaccard distance mixed with the original)."""
    n = len(z)
    original = np.clip(2 - 2 * z @ z.T, 0, None)
    original = original / original.max(axis=0)
    rank = np.argsort(original, axis=1)
    v = np.zeros((n, n))
    for i in range(n):
        forward = rank[i, : k1 + 1]
        mutual = forward[np.where(rank[forward, : k1 + 1] == i)[0]]
        grown = mutual
        half = int(np.around(k1 / 2))
        for c in mutual:
            cf = rank[c, : half + 1]
            cr = cf[np.where(rank[cf, : half + 1] == c)[0]]
            if len(np.intersect1d(cr, mutual)) > 2 / 3 * len(cr):
                grown = np.append(grown, cr)
        grown = np.unique(grown)
        w = np.exp(-original[i, grown])
        v[i, grown] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    holders = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jaccard = np.zeros((n, n))
    for i in range(n):
        shared = np.zeros(n)
        for j in np.where(v[i] != 0)[0]:
            shared[holders[j]] += np.minimum(v[i, j], v[holders[j], j])
        jaccard[i] = 1 - shared / (2 - shared)
    return jaccard * (1 - lam) + original * lam


def distance_order(d: np.ndarray) -> np.ndarray:
    """Leave-one-out orders (n, n - 1) of (n, n) distances (the diagonal left out)."""
    d = d.copy()
    np.fill_diagonal(d, np.inf)
    return leave_one_out_order(d)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tiles-crc9"))
    parser.add_argument("--recipe", default="effnet-quad-flat")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"eval_crc9_rerank: {args.data} not found", file=sys.stderr)
        raise SystemExit(2)
    recipe = load_recipe(args.recipe)
    data = load_labelled_tiles(args.data, None)
    pipeline = TilePipeline(recipe, device=args.device)
    x = pipeline.describe(read_tiles(data.paths, recipe.tiling.tile_size))
    pipeline.encoder.fit(x)
    z = unit(pipeline.encode(x).astype(np.float64))
    labels = np.array(data.labels)
    out: dict[str, object] = {"recipe": args.recipe, "tiles": len(labels)}
    out["plain"] = seed_map(l2_ranking(z)[0], labels)
    out["alpha_qe"] = seed_map(expanded_leave_one_out(z, 3, 3.0), labels)
    out["whiten"] = {
        f"{dims}d power {power}": seed_map(l2_ranking(whitened(z, dims, power))[0], labels)
        for dims in (32, 64, len(z) - 1)
        for power in (0.25, 0.5)
    }
    out["dba"] = {f"k {k}": seed_map(dba_order(z, k), labels) for k in (2, 3, 5, 8)}
    out["k_reciprocal"] = {
        f"k1 {k1} k2 {k2} lambda {lam}": seed_map(
            distance_order(k_reciprocal(z, k1, k2, lam)), labels
        )
        for k1 in (6, 10, 15, 20)
        for k2 in (1, 3, 6)
        for lam in (0.1, 0.3)
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
