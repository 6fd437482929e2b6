#!/usr/bin/env python
"""Network throughput benchmark for cbir: tiles/s of each network descriptor alone.

What it measures
    For each recipe given (default: the network recipes that run without trained
    weights: effnet-flat, cnn-flat, vae-flat, delf-hnsw; effnet-d4-flat is 8 times
    effnet-flat), on the CPU and on CUDA when there is one, its
    `TilePipeline(recipe, device=...)` describes `--tiles` random 224 px tiles already in
    memory (no slide reading), in the descriptor's own batches, after one warm-up batch:

    * tiles_per_s: with the networks as cbir loads them (channels-last weights,
      `torch.inference_mode`);
    * tiles_per_s_contiguous: the same with the weights put back in the default
      (contiguous) layout, to show what channels-last gives on this device;
    * max_abs_difference between the two outputs (layouts should not change results).

    With `--build SLIDE`, a bundle of SLIDE at `--build-magnification` is also built with
    the first recipe and its whole-build tiles/s reported next to the network's: how far
    the build is from being bounded by the network alone.

    CUDA runs report the card's name. `--precision fp32,auto` measures each network in
    float32 and with cbir's default (float16 autocast on CUDA: `cbir.nn.device.inference`;
    on CPU auto is float32); `--device` picks one device instead of both. Tiles go to
    the GPU as uint8 and are normalised there.

Run (from the repository root, with the venv active)
    python tools/bench_encode.py --json
    python tools/bench_encode.py --recipes effnet-flat --tiles 512 --json
    python tools/bench_encode.py --device cuda --precision fp32,auto --tiles 4096 --json
    python tools/bench_encode.py --recipes effnet-flat \\
        --build ~/.cache/cbir-bench/bench-40x-40000x30000-jpeg-s0-v1.svs --json
One JSON object goes to stdout with --json (a short summary otherwise); logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchutil
import numpy as np

DEFAULT_RECIPES = ("effnet-flat", "cnn-flat", "vae-flat", "delf-hnsw")


def log(msg: str) -> None:
    benchutil.log("bench_encode", msg)


def modules_of(descriptor: object) -> list:
    """The torch modules a descriptor holds (its attributes)."""
    import torch

    return [v for v in vars(descriptor).values() if isinstance(v, torch.nn.Module)]


def timed(pipeline: object, tiles: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds to describe `tiles` (after a warm-up batch) and the descriptors."""
    pipeline.describe(tiles[:8])  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    x = pipeline.describe(tiles)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, x


def network_rates(
    name: str, tiles: np.ndarray, device: str, precision: str = "auto"
) -> dict[str, object]:
    import os

    import torch

    from cbir.nn.device import PRECISION_ENV, autocast_dtype
    from cbir.pipeline import TilePipeline
    from cbir.recipes import load_recipe

    os.environ[PRECISION_ENV] = precision
    pipeline = TilePipeline(load_recipe(name), device=device)
    seconds, x = timed(pipeline, tiles)
    for module in modules_of(pipeline.descriptor):
        module.to(memory_format=torch.contiguous_format)
    seconds_c, x_c = timed(pipeline, tiles)
    row = {
        "recipe": name,
        "precision": precision,
        "autocast": str(autocast_dtype(torch.device(device))).removeprefix("torch."),
        "dim": int(x.shape[1]),
        "tiles": len(tiles),
        "tiles_per_s": round(len(tiles) / seconds, 1),
        "tiles_per_s_contiguous": round(len(tiles) / seconds_c, 1),
        "max_abs_difference": float(np.abs(x - x_c).max()),
    }
    log(f"{name}: {row['tiles_per_s']} tiles/s ({row['tiles_per_s_contiguous']} contiguous)")
    return row


def build_rate(name: str, slide: Path, magnification: float, device: str) -> dict[str, object]:
    import cbir
    from cbir.recipes import load_recipe

    base = load_recipe(name)
    recipe = base.model_copy(
        update={"tiling": base.tiling.model_copy(update={"magnifications": (magnification,)})}
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = cbir.build_index([slide], Path(tmp) / "idx", recipe, device=device)
        seconds = time.perf_counter() - t0
    row = {
        "recipe": name,
        "slide": str(slide),
        "magnification": magnification,
        "tiles": report.tiles_total,
        "tiles_per_s": round(report.tiles_total / seconds, 1),
        "stage_seconds": report.stage_seconds,
    }
    log(f"build {name} at {magnification:g}x: {row['tiles_per_s']} tiles/s")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES))
    p.add_argument("--tiles", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda if any)")
    p.add_argument("--build", type=Path, default=None, help="also build a bundle of SLIDE")
    p.add_argument("--build-magnification", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precision",
        default="auto",
        help="comma-separated CBIR_PRECISION values to measure (auto, fp32, fp16, bf16); "
        "auto is float16 autocast on CUDA, float32 on CPU",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from cbir.nn.device import resolve_device

    devices = (
        [resolve_device(args.device)]
        if args.device
        else [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    )
    rng = np.random.default_rng(args.seed)
    tiles = rng.integers(0, 256, (args.tiles, 224, 224, 3), dtype=np.uint8)
    rows = []
    for device in devices:
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for r in filter(None, args.recipes.split(",")):
            for precision in filter(None, args.precision.split(",")):
                rate = network_rates(r, tiles, str(device), precision)
                rows.append({"device": str(device), "card": card, **rate})
    device = devices[-1]
    out: dict[str, object] = {
        "torch_threads": torch.get_num_threads(),
        "networks": rows,
    }
    if args.build is not None:
        out["build"] = build_rate(
            rows[0]["recipe"],
            args.build,
            args.build_magnification,
            str(device),  # type: ignore[arg-type]
        )
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in rows:
            print(f"{r['recipe']}: {r['tiles_per_s']} tiles/s on {r['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
