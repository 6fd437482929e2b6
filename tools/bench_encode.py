#!/usr/bin/env python
"""Encoding throughput of the learned descriptors (tiles/s), on CPU and CUDA if present.

    python tools/bench_encode.py --json
    python tools/bench_encode.py --descriptors cnn,vae --tiles 256 --batch-size 64 --json
    python tools/bench_encode.py --descriptors recipe:effnet-flat,backbone --json

`recipe:NAME` is the descriptor of recipe NAME with its parameters; `backbone` alone is
the frozen EfficientNet-Lite0 (packaged ImageNet weights), final layer pooled.

Tiles are random 224 x 224 RGB (the networks' cost does not depend on content). The
first batch is a warm-up and is not timed. Weights do not change the cost either, so
untrained (seeded) networks are used.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cbir.descriptors import create_descriptor
from cbir.recipes import load_recipe


def throughput(name: str, device: str, tiles: np.ndarray, batch_size: int) -> dict[str, float]:
    """Tiles/s of descriptor `name` on `device` over `tiles` (n, 224, 224, 3) uint8."""
    params: dict[str, object] = {}
    if name.startswith("recipe:"):
        cfg = load_recipe(name.split(":", 1)[1]).descriptor
        name, params = cfg.name, {**cfg.params}
    params.update(tile_size=224, batch_size=batch_size, device=device)
    d = create_descriptor(name, **params)
    d.describe(tiles[:batch_size])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    d.describe(tiles)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "tiles_per_s": round(len(tiles) / seconds, 1),
        "seconds": round(seconds, 3),
        "dim": d.spec.dim,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", default="cnn,vae")
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tiles = np.random.default_rng(0).integers(0, 256, (args.tiles, 224, 224, 3), dtype=np.uint8)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {
        "tiles": args.tiles,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "devices": {
            dev: {
                name: throughput(name, dev, tiles, args.batch_size)
                for name in args.descriptors.split(",")
            }
            for dev in devices
        },
    }
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(out, indent=2 if not args.json else None))


if __name__ == "__main__":
    main()
