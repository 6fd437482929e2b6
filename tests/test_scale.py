"""Scale detection: the comparator, pairs from slides, --scale all / 20x, and the
comparator's P(same magnification) of a query (Index.scale_probabilities)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.errors import QueryError
from cbir.nn.scale import ScaleComparator, pair_tensor
from cbir.nn.train.scale import ScaleTrainConfig, train_scale
from cbir.nn.train.scale_pairs import make_pairs, sample_scale_tiles


@pytest.mark.parametrize("arch", ["siamese", "stacked"])
def test_comparator_shapes(arch: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 64, 64, 3)).astype(np.uint8)
    b = rng.integers(0, 255, (3, 64, 64, 3)).astype(np.uint8)
    x = pair_tensor(a, b, 32)
    assert x.shape == (3, 6, 32, 32)
    model = ScaleComparator(width=8, input_size=32, arch=arch).eval()
    with torch.no_grad():
        assert model(x).shape == (3,)
        if arch == "siamese":  # symmetric in its two tiles
            swapped = torch.cat([x[:, 3:], x[:, :3]], dim=1)
            torch.testing.assert_close(model(x), model(swapped))


def test_pairs_are_balanced_and_labelled() -> None:
    rng = np.random.default_rng(0)
    tiles = {m: np.full((4, 8, 8, 3), int(m), np.uint8) for m in (10.0, 20.0, 40.0)}
    a, b, same = make_pairs(tiles, 100, rng)
    assert same.mean() == 0.5
    same_mag = a[:, 0, 0, 0] == b[:, 0, 0, 0]  # each tile's value is its magnification
    np.testing.assert_array_equal(same_mag, same == 1.0)


def test_held_out_tiles_come_from_the_bottom_of_the_slide(generated_slide: Path) -> None:
    tiles = sample_scale_tiles(
        [generated_slide], (10.0, 20.0, 40.0), per_magnification=50, holdout=0.3
    )
    assert set(tiles.tiles["train"]) == {10.0, 20.0, 40.0}
    assert set(tiles.tiles["held"]) == {20.0, 40.0}  # no 10x cell centre in the bottom 30%
    n40 = len(tiles.tiles["held"][40.0])
    assert 0 < n40 < len(tiles.tiles["train"][40.0])  # bottom 30% of a 9 x 9 grid
    assert tiles.tiles["train"][40.0].shape[1:] == (224, 224, 3)


def test_a_slide_without_tissue_is_left_out_as_a_build_leaves_it(
    generated_slide: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`cbir train scale --slides DIR` with a blank slide in DIR: a warning, the others
    are sampled (it stopped the whole run); only blank slides: one clear error."""
    from PIL import Image

    from cbir.errors import EmptyTissueError

    blank = tmp_path / "blank.png"
    Image.new("RGB", (2000, 2000), (250, 250, 250)).save(blank)
    with caplog.at_level("WARNING", logger="cbir"):
        tiles = sample_scale_tiles([blank, generated_slide], (10.0, 20.0), per_magnification=4)
    assert set(tiles.tiles["train"]) == {10.0, 20.0}
    assert "skipping" in caplog.text and "blank.png" in caplog.text
    with pytest.raises(EmptyTissueError, match="no slide has a tissue tile: .*blank.png"):
        sample_scale_tiles([blank], (10.0, 20.0), per_magnification=4)


def tiny_config(epochs: int) -> ScaleTrainConfig:
    """A comparator small enough to train in about a second on the generated slide."""
    return ScaleTrainConfig(
        magnifications=(10.0, 20.0, 40.0),
        tiles_per_magnification=12,
        train_pairs=96,
        held_pairs=32,
        epochs=epochs,
        width=8,
        input_size=64,
    )


@pytest.fixture(scope="module")
def tiny_scale(tmp_path_factory: pytest.TempPathFactory, generated_slide: Path) -> Path:
    out = tmp_path_factory.mktemp("scale") / "scale.pt"
    cfg = tiny_config(epochs=12)
    report = train_scale([generated_slide], out, cfg, device="cpu")
    assert report.last_epoch_loss < report.first_epoch_loss and report.verdict.learned
    assert 0.0 <= report.held_accuracy <= 1.0 and report.held_pairs == 32
    return out


def test_scale_modes(tmp_path: Path, generated_slide: Path, tiny_scale: Path) -> None:
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, "stats-lsh32", scale_weights=tiny_scale)
    tile = f"{generated_slide}:448,224,224,224@40x"
    with cbir.open_index(out) as index:
        every = index.search(tile, k=20)
        assert every.searched_magnifications == index.magnifications
        only = index.search(tile, k=5, scale="20x")
        assert only.searched_magnifications == [20.0]
        assert len(only.hits) == 5 and all(h.magnification == 20.0 for h in only.hits)
        probs = index.scale_probabilities(tile)
        assert probs is not None
        assert set(probs) == {f"{m:g}x" for m in index.magnifications}
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        with pytest.raises(QueryError, match="--scale auto was removed"):
            index.search(tile, scale="auto")
        region = index.search(f"{generated_slide}:896,0,896,896@20x", k=3, scale="20x")
        assert all(h.magnification == 20.0 for h in region.hits)
        with pytest.raises(QueryError, match="not indexed"):
            index.search(tile, scale="7x")
    plain = tmp_path / "plain"
    cbir.build_index([generated_slide], plain, "stats-lsh32")
    with cbir.open_index(plain) as index:
        assert index.bundle.meta.reference_tiles() == {}  # only kept with a comparator
        with pytest.raises(QueryError, match="no scale comparator"):
            index.scale_probabilities(tile)


def test_no_probabilities_when_the_comparator_did_not_learn(
    tmp_path: Path, generated_slide: Path
) -> None:
    cfg = tiny_config(epochs=1)
    report = train_scale([generated_slide], tmp_path / "s.pt", cfg, device="cpu")
    assert not report.verdict.learned  # one epoch: the loss barely moves
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, "stats-lsh32", scale_weights=tmp_path / "s.pt")
    with cbir.open_index(out) as index:
        assert index.scale_probabilities(f"{generated_slide}:448,224,224,224@40x") is None
