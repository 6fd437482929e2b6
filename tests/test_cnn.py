"""The learned `cnn` descriptor: training, weight files, weights inside bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.descriptors.cnn import CnnDescriptor
from cbir.errors import BundleError, RecipeError
from cbir.eval import evaluate_tiles
from cbir.nn.train.cnn import CnnTrainConfig, train_cnn
from cbir.nn.train.setup import stratified_split
from cbir.nn.weights import WeightsError, load_weights, save_weights
from cbir.storage.manifest import WEIGHTS_FILE, read_manifest
from conftest import SHARED_DATA, write_two_classes

CRC9 = SHARED_DATA / "tiles-crc9"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_two_classes(tmp_path_factory.mktemp("tiles"))
    out = root.parent / "tiny-cnn.pt"
    cfg = CnnTrainConfig(epochs=6, batch_size=8, lr=3e-3, width=8, tile_size=64, holdout=0.25)
    report = train_cnn(root, out, cfg, device="cpu")
    assert report.last_epoch_loss < report.first_epoch_loss  # it learns
    assert report.train_tiles == 12 and report.holdout_tiles == 4
    return out


def test_weights_round_trip_gives_identical_descriptors(tiny_weights: Path) -> None:
    tiles = np.random.default_rng(1).integers(0, 255, (5, 224, 224, 3)).astype(np.uint8)
    a = CnnDescriptor(weights=str(tiny_weights), device="cpu").describe(tiles)
    b = CnnDescriptor(weights=str(tiny_weights), device="cpu").describe(tiles)
    assert a.shape == (5, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    spec, state = load_weights(tiny_weights, "cnn")
    assert spec["classes"] == ["dark", "pink"] and len(spec["train_paths"]) == 12
    copy = tiny_weights.parent / "copy.pt"
    save_weights(copy, "cnn", spec, state)
    np.testing.assert_array_equal(CnnDescriptor(weights=str(copy), device="cpu").describe(tiles), a)
    untrained = CnnDescriptor(device="cpu").describe(tiles)
    assert not np.allclose(untrained[:, : a.shape[1]], a)


def test_bad_weight_files(tmp_path: Path, tiny_weights: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk.pt: not a readable weights file \(not a PyTorch"):
        load_weights(junk, "cnn")  # torch itself says "KeyError: 110"
    with pytest.raises(WeightsError, match="not 'vae'"):
        load_weights(tiny_weights, "vae")
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.pt", "cnn")


def test_out_that_is_a_folder_is_refused_before_training(tmp_path: Path) -> None:
    """`cbir train cnn --out FOLDER`: one line, exit 2, before any epoch, and no
    FOLDER.tmp left behind (it trained, then failed to rename over the folder)."""
    from typer.testing import CliRunner

    from cbir.cli.main import app

    tiles = write_two_classes(tmp_path / "tiles")
    folder = tmp_path / "adir"
    folder.mkdir()
    argv = ["train", "cnn", "--tiles", str(tiles), "--out", str(folder), "--epochs", "1"]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and "is a folder; --out takes a weights file" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "tiles"]
    with pytest.raises(WeightsError, match="is a folder"):
        save_weights(folder, "cnn", {}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "tiles"]


def test_diverged_or_misplaced_weights_are_not_written(tmp_path: Path) -> None:
    """A run whose weights went NaN (an --lr of 1e10: "learned" said the verdict) writes
    no file; --out naming a device is refused, not replaced by a regular file."""
    import torch

    state = {"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(2)}
    with pytest.raises(WeightsError, match="not written: training diverged .1 weights"):
        save_weights(tmp_path / "w.pt", "cnn", {}, state)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WeightsError, match="exists and is not a regular file"):
        save_weights(Path("/dev/null"), "cnn", {}, {"b": torch.zeros(2)})
    (tmp_path / "w.pt.tmp").write_text("mine")  # a user's file of the old temporary name
    save_weights(tmp_path / "w.pt", "cnn", {}, {"b": torch.zeros(2)})
    assert (tmp_path / "w.pt.tmp").read_text() == "mine"


def test_stratified_split_holds_out_every_class() -> None:
    labels = ["a"] * 5 + ["b"] * 2
    train, held = stratified_split(labels, 0.5, 0)
    assert sorted(train + held) == list(range(7))
    assert {labels[i] for i in held} == {"a", "b"} and {labels[i] for i in train} == {"a", "b"}


def test_bundle_keeps_its_weights_and_refuses_changed_ones(
    tmp_path: Path, tiny_weights: Path, generated_slide: Path
) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, "cnn-lsh32", weights=tiny_weights, device="cpu")
    manifest = read_manifest(out)
    assert manifest.weights_sha256 is not None
    assert manifest.descriptor.params["weights_sha256"] == manifest.weights_sha256
    with cbir.open_index(out, device="cpu") as index:
        result = index.search(f"{generated_slide}:896,0,896,896@20x", k=3)
        assert (result.hits[0].x, result.hits[0].y, result.hits[0].distance) == (896, 0, 0.0)
    stored = out / manifest.state / WEIGHTS_FILE
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="does not match its checksum"):
        cbir.open_index(out)
    stored.unlink()
    with pytest.raises(BundleError, match="weights missing"):
        cbir.open_index(out)


def test_weights_for_a_weightless_recipe_are_refused(
    tmp_path: Path, tiny_weights: Path, generated_slide: Path
) -> None:
    with pytest.raises(RecipeError, match="takes no weights"):
        cbir.build_index([generated_slide], tmp_path / "x", "stats-lsh32", weights=tiny_weights)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.skipif(not CRC9.is_dir(), reason=f"{CRC9} not found (no ../shared/data)")
def test_trained_cnn_beats_stats_on_crc9(tmp_path: Path) -> None:
    """Train on half of each class, evaluate both recipes on the other half."""
    weights = tmp_path / "cnn.pt"
    train_cnn(CRC9, weights, CnnTrainConfig(epochs=40, holdout=0.5), device="cpu")
    cnn = evaluate_tiles(CRC9, "cnn-lsh32", weights=weights, device="cpu")
    stats = evaluate_tiles(CRC9, "stats-lsh32", split_from=weights)
    assert cnn.tiles == stats.tiles == 70
    assert cnn.mean.seed_map_at_10 > stats.mean.seed_map_at_10


def test_torchvision_alexnet_backbone_loads_a_local_state_dict(tmp_path: Path) -> None:
    from cbir.nn.cnn import TorchvisionAlexNetTrunk

    ref = TorchvisionAlexNetTrunk()
    fake = {f"features.{k}": torch.randn_like(v) for k, v in ref.features.state_dict().items()}
    fake["classifier.1.weight"] = torch.randn(4096, 9216)  # ignored like torchvision's head
    path = tmp_path / "alexnet-local.pth"
    torch.save(fake, path)
    trunk = TorchvisionAlexNetTrunk()
    trunk.load_torchvision(str(path))
    torch.testing.assert_close(trunk.features[0].weight, fake["features.0.weight"])
    torch.testing.assert_close(trunk.features[10].bias, fake["features.10.bias"])
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="not torchvision AlexNet"):
        TorchvisionAlexNetTrunk().load_torchvision(str(tmp_path / "wrong.pth"))


def test_cnn_trained_from_a_torchvision_backbone(tmp_path: Path) -> None:
    from cbir.nn.cnn import TorchvisionAlexNetTrunk

    path = tmp_path / "alexnet.pth"
    torch.save(
        {f"features.{k}": v for k, v in TorchvisionAlexNetTrunk().features.state_dict().items()},
        path,
    )
    root = write_two_classes(tmp_path / "tiles", size=96)
    cfg = CnnTrainConfig(
        epochs=2,
        batch_size=8,
        tile_size=96,
        holdout=0.25,
        backbone="alexnet",
        backbone_weights=str(path),
    )
    report = train_cnn(root, tmp_path / "cnn.pt", cfg, device="cpu")
    d = CnnDescriptor(weights=str(tmp_path / "cnn.pt"), device="cpu")
    assert d.spec.params["backbone"] == "alexnet" and d.normalization == "imagenet"
    assert d.describe(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, 64)
    assert report.train_tiles == 12
