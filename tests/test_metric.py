"""Seed 002 metric learning: semi-hard mining, losses, embeddings, bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.descriptors.metric import MetricDescriptor
from cbir.nn.metric import augment_image, semi_hard_triplet_loss, semi_hard_triplets
from cbir.nn.train.metric import MetricTrainConfig, knn_accuracy, train_metric
from conftest import write_two_classes


def test_semi_hard_mining_on_a_hand_made_batch() -> None:
    # 1-d points; anchor 0 (class A at 0.0), positive 1 (class A at 1.0): d(a,p) = 1.
    # negatives (class B): at 0.5 (d=0.25, harder than the positive: not semi-hard),
    # at 1.1 (d=1.21: semi-hard for margin 0.5), at 2.0 (d=4: too easy).
    x = torch.tensor([[0.0], [1.0], [0.5], [1.1], [2.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    dist = (x - x.t()) ** 2
    a, p, n = semi_hard_triplets(dist, labels, margin=0.5)
    triplets = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert (0, 1, 3) in triplets
    for ai, pi, ni in triplets:  # every selected triplet is semi-hard
        assert labels[ai] == labels[pi] != labels[ni]
        assert dist[ai, pi] < dist[ai, ni] < dist[ai, pi] + 0.5
    assert all(ni != 2 and ni != 4 for _, _, ni in triplets if _ == 0)


def test_triplet_loss_value_by_hand() -> None:
    emb = torch.tensor([[0.0], [1.0], [1.1]])
    loss, count = semi_hard_triplet_loss(emb, torch.tensor([0, 0, 1]), margin=0.5)
    # anchor 0: d_ap = 1, d_an = 1.21 -> 1 - 1.21 + 0.5 = 0.29 ; anchor 1: d_an(1, 2) = 0.01
    # is not > d_ap: no semi-hard negative
    assert count == 1 and float(loss) == pytest.approx(0.29, abs=1e-5)


def test_augmentation_keeps_shape_and_changes_pixels() -> None:
    tile = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    out = augment_image(tile, np.random.default_rng(1))
    assert out.shape == tile.shape and out.dtype == np.uint8 and not np.array_equal(out, tile)


def test_knn_accuracy_by_hand() -> None:
    emb = np.array([[0.0], [0.1], [5.0], [5.1]])
    assert knn_accuracy(emb, np.array([0, 0, 1, 1])) == 1.0
    assert knn_accuracy(emb, np.array([0, 1, 0, 1])) == 0.0


@pytest.mark.parametrize("loss", ["triplet", "crossentropy"])
def test_training_lowers_the_loss_and_gives_unit_embeddings(
    loss: str, tmp_path: Path, generated_slide: Path
) -> None:
    root = write_two_classes(tmp_path / "tiles", n=8, size=64)
    out = tmp_path / "m.pt"
    cfg = MetricTrainConfig(
        loss=loss,
        steps=60,
        tile_size=64,
        holdout=0.25,
        augmentations=4,
        classes_per_batch=2,
        tiles_per_class=8,
    )
    report = train_metric(root, out, cfg, device="cpu")
    assert report.last_loss < report.first_loss
    d = MetricDescriptor(weights=str(out), device="cpu")
    emb = d.describe(np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3)).astype(np.uint8))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    if loss == "triplet":
        idx = tmp_path / "idx"
        cbir.build_index([generated_slide], idx, "metric-flat", weights=out, device="cpu")
        with cbir.open_index(idx, device="cpu") as index:
            hits = index.search(f"{generated_slide}:448,224,224,224@40x", k=2).hits
        assert (hits[0].x, hits[0].y) == (448, 224) and hits[0].distance == pytest.approx(
            0, abs=1e-6
        )
