#!/usr/bin/env python
"""An int8 descriptor against its float32 twin: agreement, neighbours kept, speed.

    python tools/eval_int8.py [--recipe effnet-int8-flat] [--reference effnet-flat]
        [--tiles 100] [--seed 0] [--workdir DIR] [--reuse] --json

Protocol: the reference recipe's bundle of the two SVS slides (tools/eval_offgrid.py's,
in --workdir/<reference>; --reuse keeps one there). --tiles indexed tissue tiles per
(slide, magnification) are drawn with default_rng(--seed) and read; both recipes'
descriptors describe them (ONNX Runtime on the CPU, 2 threads on this machine) and the
reference bundle's encoder (standardisation fitted on its collection, then L2) maps both
to the vectors a bundle stores. Reported: cosine of each tile's int8 vector with its
float32 one (min / mean), recall@10 (each tile's 10 nearest other tiles by int8 vectors
against those by float32 vectors, mean overlap), and ms p50 to describe 16 tiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import log
from eval_offgrid import open_bundle

from cbir.descriptors import create_descriptor
from cbir.recipes import load_recipe
from cbir.slides import open_slide


def nearest(v: np.ndarray, k: int) -> np.ndarray:
    """(n, d) -> (n, k) indices of each row's k nearest other rows (squared L2)."""
    d2 = (v * v).sum(1)[:, None] + (v * v).sum(1)[None] - 2 * v @ v.T
    np.fill_diagonal(d2, np.inf)
    return np.argsort(d2, axis=1)[:, :k]


def ms16(describe, tiles: np.ndarray, repeats: int = 8) -> float:  # type: ignore[no-untyped-def]
    batch = tiles[:16]
    describe(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        describe(batch)
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="effnet-int8-flat")
    parser.add_argument("--reference", default="effnet-flat")
    parser.add_argument("--tiles", type=int, default=100, help="per slide and magnification")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "cbir-queries"))
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    index, _ = open_bundle(
        Path(args.workdir) / args.reference, args.reference, None, args.reuse, None
    )
    rng = np.random.default_rng(args.seed)
    tiles = []
    for rec in index.slides.values():
        with open_slide(rec.info.path, rec.info.base_magnification) as slide:
            for mag in rec.magnifications:
                grid = index.grids.get(rec.slide_id, mag)
                rows, cols = np.nonzero(grid.valid)
                for i in rng.permutation(len(rows))[: args.tiles]:
                    x, y, w, h = grid.geometry.rect(int(rows[i]), int(cols[i]))
                    tiles.append(slide.read_region(x, y, w, h, mag)[:224, :224])
    batch = np.stack(tiles)
    log("int8", f"{len(batch)} tiles")
    made = {}
    for name in (args.reference, args.recipe):
        spec = load_recipe(name).descriptor
        made[name] = create_descriptor(spec.name, **{**spec.params, "device": "cpu"})
    encode = index.bundle.pipeline.encode
    ref = encode(made[args.reference].describe(batch))
    low = encode(made[args.recipe].describe(batch))
    cos = (ref * low).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(low, axis=1)
    a, b = nearest(ref, 10), nearest(low, 10)
    recall = float(np.mean([len(set(p) & set(q)) / 10 for p, q in zip(a, b, strict=True)]))
    out = {
        "recipe": args.recipe,
        "reference": args.reference,
        "tiles": len(batch),
        "cosine_min": round(float(cos.min()), 4),
        "cosine_mean": round(float(cos.mean()), 4),
        "recall_at_10_vs_reference": round(recall, 4),
        "ms_per_16_tiles": {n: ms16(d.describe, batch) for n, d in made.items()},
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
