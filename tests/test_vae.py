"""The `vae` descriptor: loss, reparameterisation, mu as a deterministic descriptor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.descriptors.vae import VaeDescriptor
from cbir.nn.train.vae import VaeTrainConfig, train_vae
from cbir.nn.vae import TileVAE, to_unit, vae_loss
from cbir.nn.weights import load_weights
from conftest import write_two_classes


def test_loss_terms_by_hand() -> None:
    x = torch.zeros(2, 3, 4, 4)
    recon = torch.full((2, 3, 4, 4), 0.5)
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.zeros(2, 2)
    total, rec, kl = vae_loss(recon, x, mu, logvar)
    assert float(rec) == pytest.approx(48 * 0.25 / 1)  # 48 values of 0.25 per sample
    assert float(kl) == pytest.approx(0.5 * 1.0 / 2)  # only mu = 1 contributes, mean over 2
    assert float(total) == pytest.approx(float(rec) + float(kl))


def test_mu_is_deterministic_and_z_is_not() -> None:
    torch.manual_seed(0)
    model = TileVAE(tile_size=64, latent=32, width=8, depth=3).eval()
    x = to_unit(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3)).astype(np.uint8))
    with torch.no_grad():
        mu1, _ = model.encode(x)
        mu2, _ = model.encode(x)
        _, mu3, _ = model(x, torch.Generator().manual_seed(1))
        recon_a, _, _ = model(x, torch.Generator().manual_seed(1))
        recon_b, _, _ = model(x, torch.Generator().manual_seed(2))
    torch.testing.assert_close(mu1, mu2)
    torch.testing.assert_close(mu1, mu3)
    assert not torch.allclose(recon_a, recon_b)  # the sample z differs, mu does not


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_two_classes(tmp_path_factory.mktemp("vae-tiles"))
    out = root.parent / "tiny-vae.pt"
    cfg = VaeTrainConfig(
        latent=32, epochs=8, batch_size=4, lr=3e-3, width=8, depth=3, tile_size=64, holdout=0.25
    )
    report = train_vae(root, out, cfg, device="cpu")
    assert report.last_epoch_loss < report.first_epoch_loss
    assert report.holdout_reconstruction_mse is not None
    return out


def test_vae_descriptor_from_weights(tiny_vae: Path) -> None:
    spec, _ = load_weights(tiny_vae, "vae")
    assert spec["latent"] == 32 and len(spec["train_paths"]) == 12
    tiles = np.random.default_rng(2).integers(0, 255, (4, 64, 64, 3)).astype(np.uint8)
    a = VaeDescriptor(tile_size=64, weights=str(tiny_vae), device="cpu").describe(tiles)
    b = VaeDescriptor(tile_size=64, weights=str(tiny_vae), device="cpu").describe(tiles)
    assert a.shape == (4, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    with pytest.raises(cbir.CbirError, match="64 px tiles"):
        VaeDescriptor(tile_size=224, weights=str(tiny_vae))


def test_vae_flat_recipe_end_to_end(tmp_path: Path, generated_slide: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, "vae-flat", device="cpu", untrained=True)
    with cbir.open_index(out, device="cpu") as index:
        hits = index.search(f"{generated_slide}:896,0,896,896@20x", k=2).hits
    assert (hits[0].x, hits[0].y) == (896, 0) and hits[0].distance == pytest.approx(0, abs=1e-6)
