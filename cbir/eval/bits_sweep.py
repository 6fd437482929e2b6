"""Code-length sweep: LSH vs deep hashing (seed 001) vs SSDH (seed 004) on labelled tiles.

For each q, `train_deephash` and `train_ssdh` (frozen backbone, seed 0) train on half of
each class; on the other half their codes and q-bit LSH codes of the *same* backbone
features (seeded hyperplanes through the standardised features) are ranked leave-one-out
by Hamming distance (ties by index). Metrics are averaged over classes.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from cbir.descriptors.deephash import DeepHashDescriptor
from cbir.descriptors.ssdh import SSDHDescriptor
from cbir.encoders.base import pack_bits
from cbir.encoders.threshold import ThresholdEncoder
from cbir.errors import CbirError
from cbir.eval.harness import ranking
from cbir.eval.metrics import average_precision_at_k, precision_at_k, seed_map_at_k
from cbir.nn.backbones import backbone_weights_file
from cbir.nn.train.deephash import DeepHashTrainConfig, train_deephash
from cbir.nn.train.ssdh import SSDHTrainConfig, train_ssdh
from cbir.nn.weights import load_weights
from cbir.slides.tileset import load_labelled_tiles, read_tiles


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


def code_lengths(text: str) -> list[int]:
    """--bits-sweep "12,24,48" -> [12, 24, 48]; CbirError in one line otherwise."""
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise CbirError(f"--bits-sweep {text!r}: code lengths, e.g. 24,48,64") from None


def bits_sweep(
    root: Path,
    bits: list[int],
    backbone: str = "small",
    backbone_weights: str | None = None,
    device: str | None = "cpu",
) -> dict[str, object]:
    """One row per code length: class-averaged seed MAP@10, mAP@10, P@5 of each method."""
    start = time.perf_counter()
    data = load_labelled_tiles(root)
    label_of = dict(zip(data.paths, data.labels, strict=True))
    rows: dict[str, object] = {}
    n_tiles = 0
    with tempfile.TemporaryDirectory() as tmp:
        for q in bits:
            weights = Path(tmp) / f"dh{q}.pt"
            cfg = DeepHashTrainConfig(backbone=backbone, backbone_weights=backbone_weights, bits=q)
            report = train_deephash(root, weights, cfg, device=device)
            spec, _ = load_weights(weights, "deephash")
            held = spec["holdout_paths"]
            labels = np.array([label_of[p] for p in held])
            n_tiles = len(labels)
            tiles = read_tiles(held, 224)
            d = DeepHashDescriptor(weights=str(weights), device=device)
            feats = d.input.raw(tiles).cpu().numpy()
            ssdh_w = Path(tmp) / f"ssdh{q}.pt"
            ssdh_cfg = SSDHTrainConfig(backbone=backbone, backbone_weights=backbone_weights, bits=q)
            ssdh_report = train_ssdh(root, ssdh_w, ssdh_cfg, device=device)
            ssdh = SSDHDescriptor(weights=str(ssdh_w), device=device)
            rows[str(q)] = {
                "lsh": class_mean_metrics(lsh_codes(feats, q), labels),
                "deephash": class_mean_metrics(
                    ThresholdEncoder(q).encode(d.describe(tiles)), labels
                ),
                "ssdh": class_mean_metrics(
                    ThresholdEncoder(q).encode(ssdh.describe(tiles)), labels
                ),
                "deephash_bit_statistics": report.bit_statistics,
                "ssdh_bit_statistics": ssdh_report.bit_statistics,
                "deephash_holdout_accuracy": report.holdout_accuracy,
            }
    start_from = backbone_weights_file(backbone, backbone_weights)
    note = f"weights {Path(start_from).name}" if start_from else "seeded random init"
    return {
        "protocol": "train on half of each class, leave-one-out on the other half "
        f"({n_tiles} tiles), class-averaged; backbone {backbone} ({note}, frozen)",
        "results": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
