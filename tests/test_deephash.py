"""Seed 001 deep hashing: tied autoencoder, loss, bits, packing, bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.encoders.bits import bit_statistics
from cbir.encoders.threshold import ThresholdEncoder
from cbir.eval.harness import ranking
from cbir.eval.metrics import average_precision_at_k
from cbir.nn.deephash import TiedHashAutoencoder, deephash_loss
from cbir.nn.train.deephash import DeepHashTrainConfig, train_deephash
from conftest import SHARED_DATA, write_two_classes

CRC9 = SHARED_DATA / "tiles-crc9"


def test_decoder_is_tied_to_the_encoder() -> None:
    model = TiedHashAutoencoder(in_dim=6, bits=3, n_classes=2)
    names = {n for n, _ in model.named_parameters()}
    assert names == {"theta", "b", "b_dec", "classifier.weight", "classifier.bias"}
    x = torch.rand(4, 6)
    _, h, recon, _ = model(x)
    expected = torch.sigmoid(h @ model.theta + model.b_dec)  # Theta' = Theta^T
    torch.testing.assert_close(recon, expected)
    loss, parts = deephash_loss(model, x, torch.tensor([0, 1, 0, 1]), weight_decay=0.1)
    assert parts["l2"] == pytest.approx(0.1 * float(model.theta.detach().pow(2).sum()))
    assert float(loss.detach()) == pytest.approx(sum(parts.values()), rel=1e-5)


def test_threshold_codes_bits_and_packing() -> None:
    enc = ThresholdEncoder(input_dim=12)
    assert enc.spec.bits == 16 and enc.spec.code_bytes == 2
    x = np.zeros((1, 12), np.float32)
    x[0, [0, 3, 11]] = 0.9
    x[0, 5] = 0.5  # not above the threshold
    code = enc.encode(x)
    bits = np.unpackbits(code, axis=1, bitorder="little")[0]
    assert np.flatnonzero(bits).tolist() == [0, 3, 11]  # padding bits 12..15 stay 0


def test_bit_statistics_by_hand() -> None:
    bits = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]], bool)
    st = bit_statistics(bits)
    assert st["bit_balance"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert st["bit_correlation"] == pytest.approx(1.0)  # bits 0 and 1 are complements
    assert st["constant_bits"] == 1


@pytest.fixture(scope="module")
def tiny_deephash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_two_classes(tmp_path_factory.mktemp("dh-tiles"), n=8, size=64)
    out = root.parent / "dh12.pt"
    cfg = DeepHashTrainConfig(bits=12, epochs=40, tile_size=64, holdout=0.25)
    report = train_deephash(root, out, cfg, device="cpu")
    assert report.last_loss < report.first_loss
    assert report.bits == 12 and 0 <= report.bit_statistics["bit_balance"] <= 0.5
    return out


def test_deephash_bundle_end_to_end(
    tmp_path: Path, tiny_deephash: Path, generated_slide: Path
) -> None:
    out = tmp_path / "idx"
    report = cbir.build_index(
        [generated_slide], out, "deephash12-ivf", weights=tiny_deephash, device="cpu"
    )
    assert report.index_kind == "flat"
    with cbir.open_index(out, device="cpu") as index:
        assert index.bundle.pipeline.encoder_spec.bits == 16
        hits = index.search(f"{generated_slide}:448,224,224,224@40x", k=3).hits
    assert (hits[0].x, hits[0].y, hits[0].distance) == (448, 224, 0.0)


def test_a_recipe_of_another_bit_count_is_refused_in_one_line(
    tmp_path: Path, tiny_deephash: Path, generated_slide: Path
) -> None:
    from typer.testing import CliRunner

    from cbir.cli.main import app

    out = tmp_path / "idx"
    res = CliRunner().invoke(
        app,
        [
            "build-index",
            str(generated_slide),
            "--out",
            str(out),
            "--recipe",
            "deephash24-ivf",
            "--weights",
            str(tiny_deephash),
        ],
    )
    lines = [line for line in res.stderr.splitlines() if line.startswith("cbir: error")]
    assert res.exit_code == 2 and len(lines) == 1, res.stderr
    assert "24 bits but the weights give 12-bit" in lines[0] and str(tiny_deephash) in lines[0]
    assert not out.exists()


def test_add_with_the_recipe_name_accepts_a_bundle_built_before_recipes_stated_bits(
    tmp_path: Path, tiny_deephash: Path, generated_slide: Path, second_slide: Path
) -> None:
    from cbir.recipes import ComponentConfig, load_recipe

    recipe = load_recipe("deephash12-ivf")
    old = recipe.model_copy(
        update={"encoder": ComponentConfig(name="threshold", params={"threshold": 0.5})}
    )
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, old, weights=tiny_deephash, device="cpu")
    report = cbir.add_slides(out, [second_slide], recipe="deephash12-ivf")
    assert report.slides_total == 2


def _map10(codes: np.ndarray, labels: np.ndarray) -> float:
    order, _ = ranking(codes)
    aps = [
        average_precision_at_k(
            labels[order[q]] == labels[q], 10, int((labels == labels[q]).sum()) - 1
        )
        for q in range(len(labels))
    ]
    return float(np.mean(aps))


@pytest.mark.slow
@pytest.mark.skipif(not CRC9.is_dir(), reason=f"{CRC9} not found (no ../shared/data)")
def test_deephash_beats_lsh_of_equal_length_on_crc9(tmp_path: Path) -> None:
    """Same frozen backbone features, 32 bits each, on the held-out half of tiles-crc9."""
    from cbir.descriptors.deephash import DeepHashDescriptor
    from cbir.encoders.lsh import LshEncoder
    from cbir.nn.weights import load_weights
    from cbir.slides.tileset import read_tiles

    weights = tmp_path / "dh32.pt"
    train_deephash(CRC9, weights, DeepHashTrainConfig(bits=32, epochs=300), device="cpu")
    spec, _ = load_weights(weights, "deephash")
    held = spec["holdout_paths"]
    labels_by_path = dict(zip(*_labels(CRC9), strict=True))
    labels = np.array([labels_by_path[p] for p in held])
    tiles = read_tiles(held, 224)
    d = DeepHashDescriptor(weights=str(weights), device="cpu")
    dh_codes = ThresholdEncoder(32).encode(d.describe(tiles))
    feats = d.input.raw(tiles).cpu().numpy()
    lsh = LshEncoder(input_dim=feats.shape[1], bits=32, seed=0)
    lsh.fit(feats)
    assert _map10(dh_codes, labels) > _map10(lsh.encode(feats), labels)


def _labels(root: Path) -> tuple[list[str], list[str]]:
    from cbir.slides.tileset import load_labelled_tiles

    data = load_labelled_tiles(root)
    return data.paths, data.labels


def test_fine_tuning_changes_the_backbone_but_not_its_batchnorm_statistics(tmp_path: Path) -> None:
    from cbir.nn.weights import load_weights

    root = write_two_classes(tmp_path / "tiles", n=6, size=64)
    frozen, tuned = tmp_path / "frozen.pt", tmp_path / "tuned.pt"
    base = DeepHashTrainConfig(bits=12, epochs=5, tile_size=64, holdout=0.0)
    train_deephash(root, frozen, base, device="cpu")
    report = train_deephash(
        root,
        tuned,
        base.model_copy(update={"fine_tune_steps": 3, "fine_tune_batch": 4}),
        device="cpu",
    )
    assert np.isfinite(report.last_loss)
    spec_f, a = load_weights(frozen, "deephash")
    spec_t, b = load_weights(tuned, "deephash")
    assert not spec_f["fine_tuned"] and spec_t["fine_tuned"]
    conv = "backbone.features.0.weight"
    assert not torch.equal(a[conv], b[conv])  # the backbone trained
    stats = [k for k in a if k.endswith("running_mean") and k.startswith("backbone.")]
    assert stats and all(torch.equal(a[k], b[k]) for k in stats)  # BN statistics kept
