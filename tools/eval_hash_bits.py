#!/usr/bin/env python
"""LSH vs deep hashing (seed 001) vs SSDH (seed 004) at several code lengths, tiles-crc9.

    python tools/eval_hash_bits.py --json [--bits 12,24,32,48,64,128] [--backbone small]

For each q: `train_deephash` (frozen backbone, seed 0) trains on half of each class; on
the other half both the deep-hash codes and q-bit LSH codes of the *same* backbone
features (seeded hyperplanes through the standardised features) are ranked leave-one-out
by Hamming distance (ties by index). Metrics are averaged over classes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from cbir.descriptors.deephash import DeepHashDescriptor
from cbir.descriptors.ssdh import SSDHDescriptor
from cbir.encoders.base import pack_bits
from cbir.encoders.threshold import ThresholdEncoder
from cbir.eval.harness import ranking
from cbir.eval.metrics import average_precision_at_k, precision_at_k, seed_map_at_k
from cbir.nn.train_deephash import DeepHashTrainConfig, backbone_features, train_deephash
from cbir.nn.train_ssdh import SSDHTrainConfig, train_ssdh
from cbir.nn.weights import load_weights
from cbir.tileset import load_labelled_tiles, read_tiles


def lsh_codes(x: np.ndarray, q: int, seed: int = 0) -> np.ndarray:
    """q-bit LSH of standardised (n, d) features, padded to whole bytes."""
    z = (x - x.mean(0)) / np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    planes = np.random.default_rng(seed).standard_normal((q, x.shape[1]))
    bits = np.zeros((len(x), -(-q // 8) * 8), bool)
    bits[:, :q] = z @ planes.T <= 0  # bit 0 above the hyperplane, as the lsh encoder
    return pack_bits(bits)


def class_mean_metrics(codes: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    order, _ = ranking(codes)
    per_class: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for qi, label in enumerate(labels):
        rel = labels[order[qi]] == label
        n_rel = int((labels == label).sum()) - 1
        per_class[str(label)].append(
            (seed_map_at_k(rel, 10), average_precision_at_k(rel, 10, n_rel), precision_at_k(rel, 5))
        )
    means = np.array([np.mean(v, axis=0) for v in per_class.values()]).mean(axis=0)
    return {
        "seed_map_at_10": round(float(means[0]), 4),
        "map_at_10": round(float(means[1]), 4),
        "precision_at_5": round(float(means[2]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tiles-crc9"))
    parser.add_argument("--bits", default="12,24,32,48,64,128")
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--backbone-weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"eval_hash_bits: {args.data} not found", file=sys.stderr)
        raise SystemExit(2)
    start = time.perf_counter()
    data = load_labelled_tiles(args.data)
    label_of = dict(zip(data.paths, data.labels, strict=True))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q in (int(b) for b in args.bits.split(",")):
            weights = Path(tmp) / f"dh{q}.pt"
            cfg = DeepHashTrainConfig(
                backbone=args.backbone, backbone_weights=args.backbone_weights, bits=q
            )
            report = train_deephash(args.data, weights, cfg, device=args.device)
            spec, _ = load_weights(weights, "deephash")
            held = spec["holdout_paths"]
            labels = np.array([label_of[p] for p in held])
            tiles = read_tiles(held, 224)
            d = DeepHashDescriptor(weights=str(weights), device=args.device)
            feats = backbone_features(d.backbone, tiles, d.normalization, d.device).numpy()
            ssdh_w = Path(tmp) / f"ssdh{q}.pt"
            ssdh_cfg = SSDHTrainConfig(
                backbone=args.backbone, backbone_weights=args.backbone_weights, bits=q
            )
            ssdh_report = train_ssdh(args.data, ssdh_w, ssdh_cfg, device=args.device)
            ssdh = SSDHDescriptor(weights=str(ssdh_w), device=args.device)
            rows[str(q)] = {
                "lsh": class_mean_metrics(lsh_codes(feats, q), labels),
                "deephash": class_mean_metrics(
                    ThresholdEncoder(q).encode(d.describe(tiles)), labels
                ),
                "ssdh": class_mean_metrics(
                    ThresholdEncoder(q).encode(ssdh.describe(tiles)), labels
                ),
                "ssdh_bit_statistics": ssdh_report.bit_statistics,
                "deephash_bit_statistics": report.bit_statistics,
                "deephash_holdout_accuracy": report.holdout_accuracy,
            }
    backbone_note = (
        f"weights {args.backbone_weights}"
        if args.backbone_weights
        else "seeded random init, frozen"
    )
    out = {
        "protocol": "train on half of each class, leave-one-out on the other half "
        f"({len(labels)} tiles), class-averaged; backbone {args.backbone} "
        f"({backbone_note})",
        "results": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
