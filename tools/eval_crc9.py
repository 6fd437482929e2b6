#!/usr/bin/env python
"""Retrieval quality on tiles-crc9 for every descriptor, on one held-out split.

    python tools/eval_crc9.py --json [--data ../shared/data/tiles-crc9] [--device cpu]

Protocol: `cbir train cnn` and `cbir train vae` train on half of each class (seed 0,
the same stratified split for both); every recipe is then evaluated leave-one-out on
the other half only (queries and database), with the same metrics as `cbir evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cbir.eval import evaluate_tiles
from cbir.nn.train.cnn import CnnTrainConfig, train_cnn
from cbir.nn.train.vae import VaeTrainConfig, train_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tiles-crc9"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cnn-epochs", type=int, default=40)
    parser.add_argument("--vae-epochs", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"eval_crc9: {args.data} not found", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as tmp:
        cnn_w, vae_w = Path(tmp) / "cnn.pt", Path(tmp) / "vae.pt"
        start = time.perf_counter()
        cnn = train_cnn(
            args.data, cnn_w, CnnTrainConfig(epochs=args.cnn_epochs), device=args.device
        )
        vae = train_vae(
            args.data, vae_w, VaeTrainConfig(epochs=args.vae_epochs), device=args.device
        )
        runs = {
            "stats-lsh32": dict(recipe="stats-lsh32"),
            "stats-lsh64": dict(recipe="stats-lsh64"),
            "cnn-lsh32 (trained, Hamming)": dict(recipe="cnn-lsh32", weights=cnn_w),
            "cnn float (trained, L2)": dict(recipe="cnn-flat", weights=cnn_w, space="float"),
            "cnn float (untrained, L2)": dict(recipe="cnn-flat", space="float"),
            "vae (trained, L2 on mu)": dict(recipe="vae-flat", weights=vae_w, space="float"),
            "vae (untrained, L2 on mu)": dict(recipe="vae-flat", space="float"),
        }
        results = {}
        for name, kw in runs.items():
            rep = evaluate_tiles(args.data, split_from=cnn_w, device=args.device, **kw)
            results[name] = {"tiles": rep.tiles, **rep.mean.model_dump(exclude={"queries"})}
        out = {
            "protocol": "train on half of each class (69 tiles), evaluate leave-one-out on the "
            "other 70; metrics averaged over classes",
            "cnn_holdout_classification_accuracy": cnn.holdout_accuracy,
            "cnn_train_seconds": cnn.seconds,
            "vae_train_seconds": vae.seconds,
            "vae_holdout_reconstruction_mse": vae.holdout_reconstruction_mse,
            "device": cnn.device,
            "results": results,
            "seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
