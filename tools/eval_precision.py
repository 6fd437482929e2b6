#!/usr/bin/env python
"""Descriptors at lower precision or in another runtime against float32: agreement,
neighbours kept, speed.

    python tools/eval_precision.py [--reference effnet-flat]
        [--candidates effnet-flat@bf16,effnet-int8-flat] [--tiles 100] [--seed 0]
        [--workdir DIR] [--reuse] --json

A candidate is `recipe[@precision][:runtime]`: precision one of CBIR_PRECISION's values
(fp32, bf16, fp16; default fp32; an int8 recipe is int8 whatever it says) and runtime one
of CBIR_RUNTIME's (torch, onnx, openvino; default auto). The reference is the recipe at
fp32 in PyTorch.

Protocol: the reference recipe's bundle of the two SVS slides (tools/eval_offgrid.py's,
in --workdir/<reference>; --reuse keeps one there). --tiles indexed tissue tiles per
(slide, magnification) are drawn with default_rng(--seed) and read; the reference and
each candidate describe them (2 threads on this machine) and the reference bundle's
encoder (standardisation fitted on its collection, then L2) maps them to the vectors a
bundle stores. Reported per candidate: cosine of each tile's vector with its reference
one (min / mean), recall@10 (each tile's 10 nearest other tiles by the candidate's
vectors against those by the reference's, mean overlap), and tiles/s describing batches
of 32 (median of 8, after one warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def settings(precision: str, runtime: str) -> Iterator[None]:
    """CBIR_PRECISION and CBIR_RUNTIME set meanwhile (read when a descriptor is made and,
    in PyTorch, at each batch)."""
    old = {k: os.environ.get(k) for k in ("CBIR_PRECISION", "CBIR_RUNTIME")}
    os.environ.update(CBIR_PRECISION=precision, CBIR_RUNTIME=runtime)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse(candidate: str) -> tuple[str, str, str]:
    """ "recipe[@precision][:runtime]" -> (recipe, precision, runtime)."""
    rest, _, runtime = candidate.partition(":")
    recipe, _, precision = rest.partition("@")
    return recipe, precision or "fp32", runtime or "auto"


def tiles_per_s(describe, tiles: np.ndarray, repeats: int = 8) -> float:  # type: ignore[no-untyped-def]
    batch = tiles[:32]
    describe(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        describe(batch)
        times.append(time.perf_counter() - t)
    return round(len(batch) / statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="effnet-flat")
    parser.add_argument(
        "--candidates",
        default="effnet-flat@fp32:onnx,effnet-flat@fp32:openvino,effnet-flat@bf16:openvino,"
        "effnet-flat@bf16:torch,effnet-int8-flat",
    )
    parser.add_argument("--tiles", type=int, default=100, help="per slide and magnification")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "cbir-queries"))
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with settings("fp32", "auto"):
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
    log("precision", f"{len(batch)} tiles")
    encode = index.bundle.pipeline.encode
    rows = []
    for candidate in [f"{args.reference}@fp32:torch", *args.candidates.split(",")]:
        name, precision, runtime = parse(candidate)
        with settings(precision, runtime):
            spec = load_recipe(name).descriptor
            d = create_descriptor(spec.name, **{**spec.params, "device": "cpu"})
            vectors = encode(d.describe(batch))
            speed = tiles_per_s(d.describe, batch)
        if not rows:
            ref, ref_nn = vectors, nearest(vectors, 10)
        cos = (ref * vectors).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(vectors, axis=1)
        near = nearest(vectors, 10)
        recall = np.mean([len(set(p) & set(q)) / 10 for p, q in zip(ref_nn, near, strict=True)])
        engine = getattr(getattr(d, "onnx", None), "engine", None) or "torch"
        rows.append(
            {
                "candidate": candidate,
                "ran_in": engine,
                "cosine_min": round(float(cos.min()), 4),
                "cosine_mean": round(float(cos.mean()), 4),
                "recall_at_10_vs_reference": round(float(recall), 4),
                "tiles_per_s": speed,
            }
        )
        log("precision", json.dumps(rows[-1]))
    out = {"reference": f"{args.reference}@fp32:torch", "tiles": len(batch), "rows": rows}
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
