#!/usr/bin/env python
"""How fast a GPU build's reading and gathering can go, on any machine: a build whose
network is simulated as a GPU would run it.

What it measures
    A build of SLIDE with the recipe's tiling, its tiles gathered as on CUDA (`GPU_READERS`
    reader threads, or `--readers`, handing tiles to one `TileBatcher`), but the network
    replaced by a stand-in for the GPU: each batch waits `--batch-latency-ms` plus
    n / `--gpu-tiles-per-s` seconds with the GIL released (an H100 runs effnet-flat's
    network at about 16,000 tiles/s), after `--host-forwards` forward passes of a
    100-layer CPU network on an 8 px input (the host's launch and Python work per batch;
    0.7 ms each alone here). `--gpu-tiles-per-s 0` makes the network free: the bound set
    by reading alone. `--plain` describes on the reader threads without gathering.

    Prints tiles/s of the build, the batches (count, tiles a batch, seconds in the network
    call, ms a batch) and the stage thread-seconds. Compare with `bench_encode --build`'s
    `gathered` on a real GPU: where the real build is far slower, the gap is in the CUDA
    side of the batcher, not in reading or gathering.

Run (from the repository root, with the venv active)
    python tools/bench_gather.py --json
    python tools/bench_gather.py --readers 2 --host-forwards 1 --magnifications 5,10,20
    python tools/bench_gather.py --gpu-tiles-per-s 0 --plain --json
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

DEFAULT_SLIDE = Path("~/.cache/cbir-bench/bench-40x-40000x30000-jpeg-s0-v1.svs")


def host_network() -> object:
    """100 tiny convolutions: a CPU stand-in for a forward pass's launch overhead."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 1) for _ in range(100))).eval()


def run(args: argparse.Namespace) -> dict[str, object]:
    import torch

    import cbir
    import cbir.describe
    from cbir.pipeline import TilePipeline
    from cbir.recipes import load_recipe

    torch.set_num_threads(1)
    net, probe = host_network(), torch.zeros(1, 3, 8, 8)
    sizes: list[int] = []
    seconds = [0.0]

    def simulated(pipeline: TilePipeline, tiles: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.host_forwards):
                net(probe)  # type: ignore[operator]
        if args.gpu_tiles_per_s > 0:
            time.sleep(args.batch_latency_ms / 1000 + len(tiles) / args.gpu_tiles_per_s)
        sizes.append(len(tiles))
        seconds[0] += time.perf_counter() - t0
        return np.zeros((len(tiles), pipeline.descriptor_spec.dim), np.float32)

    TilePipeline.describe = simulated  # type: ignore[method-assign]
    if not args.plain:
        cbir.describe.gathers_for_gpu = lambda pipeline: True  # type: ignore[assignment]
        if args.readers:
            cbir.describe.GPU_READERS = args.readers  # type: ignore[attr-defined]
    base = load_recipe(args.recipe)
    mags = tuple(float(m) for m in args.magnifications.split(",") if m)
    tiling = base.tiling.model_copy(update={"magnifications": mags})
    recipe = base.model_copy(update={"tiling": tiling})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = cbir.build_index(
            [args.slide.expanduser()], Path(tmp) / "idx", recipe, device="cpu", untrained=True
        )
        wall = time.perf_counter() - t0
    batches = max(len(sizes), 1)
    return {
        "slide": str(args.slide),
        "recipe": args.recipe,
        "magnifications": list(mags),
        "gathered": not args.plain,
        "readers": (args.readers or cbir.describe.GPU_READERS) if not args.plain else None,
        "gpu_tiles_per_s": args.gpu_tiles_per_s,
        "host_forwards": args.host_forwards,
        "tiles": report.tiles_total,
        "tiles_per_s": round(report.tiles_total / wall, 1),
        "batches": len(sizes),
        "tiles_per_batch": round(float(np.mean(sizes)), 1) if sizes else 0.0,
        "network_call_seconds": round(seconds[0], 3),
        "ms_per_batch": round(1000 * seconds[0] / batches, 2),
        "stage_seconds": report.stage_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    p.add_argument("--recipe", default="effnet-flat")
    p.add_argument("--magnifications", default="20")
    p.add_argument("--readers", type=int, default=16, help="0: cbir's GPU_READERS")
    p.add_argument("--gpu-tiles-per-s", type=float, default=16000.0)
    p.add_argument("--batch-latency-ms", type=float, default=2.0)
    p.add_argument("--host-forwards", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="no gathering: readers describe")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.slide.expanduser().is_file():
        print(
            f"bench_gather: {args.slide}: no such slide (python tools/bench_index.py "
            "--bench-slide writes the default one)",
            file=sys.stderr,
        )
        return 2
    out = run(args)
    benchutil.log("bench_gather", f"{out['tiles_per_s']} tiles/s, {out['batches']} batches")
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(
            f"{out['tiles']} tiles at {out['tiles_per_s']} tiles/s; {out['batches']} batches "
            f"of {out['tiles_per_batch']} tiles, {out['ms_per_batch']} ms each"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
