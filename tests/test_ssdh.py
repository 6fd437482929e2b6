"""Seed 004: SSDH latent layer and the Reliability Object Layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cbir
from cbir.errors import CbirError
from cbir.nn.ssdh import SSDHHead, reliability, ssdh_loss
from cbir.nn.train.ssdh import SSDHTrainConfig, train_ssdh
from conftest import write_two_classes


def test_reliability_is_max_over_non_background_classes() -> None:
    logits = torch.zeros(1, 3, 2, 2)  # classes: 0 background, 1, 2
    logits[0, 0, 0, 0] = 10.0  # pixel (0, 0): background
    logits[0, 2, 1, 1] = 10.0  # pixel (1, 1): class 2
    r = reliability(logits)
    probs = torch.softmax(logits, dim=1)
    torch.testing.assert_close(r[0, 0], torch.maximum(probs[0, 1], probs[0, 2]))
    assert float(r[0, 0, 0, 0]) < 0.01 and float(r[0, 0, 1, 1]) > 0.99


def test_rol_multiplies_the_feature_map_by_r() -> None:
    torch.manual_seed(0)
    head = SSDHHead(channels=4, bits=8, n_classes=2, n_seg_classes=3).eval()
    fmap = torch.rand(2, 4, 6, 6)
    with torch.no_grad():
        h, _, seg = head(fmap)
        weighted = fmap * reliability(seg)
        expected = torch.sigmoid(head.latent(weighted.mean(dim=(2, 3))))
    torch.testing.assert_close(h, expected)
    plain = SSDHHead(channels=4, bits=8, n_classes=2).eval()
    with torch.no_grad():
        h2, _, seg2 = plain(fmap)
    assert seg2 is None
    torch.testing.assert_close(h2, torch.sigmoid(plain.latent(fmap.mean(dim=(2, 3)))))


def test_ssdh_loss_rewards_binary_balanced_activations() -> None:
    logits, labels = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    binary_balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    middling = torch.full((4, 2), 0.5)
    assert ssdh_loss(binary_balanced, logits, labels) < ssdh_loss(middling, logits, labels)


def test_rol_without_masks_is_refused(tmp_path: Path) -> None:
    root = write_two_classes(tmp_path / "tiles", n=4, size=64)
    with pytest.raises(CbirError, match="needs --masks"):
        train_ssdh(root, tmp_path / "x.pt", SSDHTrainConfig(rol=True, tile_size=64))


@pytest.mark.parametrize("rol", [False, True])
def test_ssdh_trains_and_indexes(rol: bool, tmp_path: Path, generated_slide: Path) -> None:
    root = write_two_classes(tmp_path / "tiles", n=8, size=64)
    masks = tmp_path / "masks"
    for tile in root.rglob("*.png"):  # left half tissue of the tile's class, right half glass
        rel = tile.relative_to(root)
        (masks / rel.parent).mkdir(parents=True, exist_ok=True)
        label = np.zeros((64, 64), np.uint8)
        label[:, :32] = 1 if rel.parts[0] == "dark" else 2
        Image.fromarray(label).save(masks / rel)
    cfg = SSDHTrainConfig(
        bits=12, epochs=40, tile_size=64, holdout=0.25, rol=rol, masks=str(masks) if rol else None
    )
    report = train_ssdh(root, tmp_path / "ssdh.pt", cfg, device="cpu")
    assert report.last_loss < report.first_loss and report.rol == rol
    out = tmp_path / "idx"
    cbir.build_index(
        [generated_slide], out, "ssdh12-ivf", weights=tmp_path / "ssdh.pt", device="cpu"
    )
    with cbir.open_index(out, device="cpu") as index:
        assert index.bundle.pipeline.encoder_spec.bits == 16
        hits = index.search(f"{generated_slide}:448,224,224,224@40x", k=2).hits
    assert (hits[0].x, hits[0].y, hits[0].distance) == (448, 224, 0.0)
