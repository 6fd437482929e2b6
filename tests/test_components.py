"""Registries and every registered component, on a small real tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbir.descriptors import DESCRIPTORS, create_descriptor, list_descriptors
from cbir.descriptors.stats import StatsDescriptor
from cbir.encoders import create_encoder, list_encoders
from cbir.encoders.lsh import LshEncoder
from cbir.errors import UnknownComponentError
from cbir.registry import Registry
from cbir.slides.sample import sample_image
from conftest import write_two_classes


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """(8, 224, 224, 3) uint8 tiles of the sample image."""
    image = sample_image()
    return np.stack(
        [
            image[r * 224 : (r + 1) * 224, c * 224 : (c + 1) * 224]
            for r in range(2)
            for c in range(4)
        ]
    )


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(
        UnknownComponentError,
        match="valid names: backbone, cnn, deephash, delf, lda, metric, ssdh, stats, vae",
    ):
        create_descriptor("nope")


def test_registering_twice_is_an_error() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object)


def test_bad_parameters_are_reported() -> None:
    with pytest.raises(UnknownComponentError, match="bad parameters"):
        DESCRIPTORS.create("stats", nonsense=3)


@pytest.fixture(scope="module")
def descriptor_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Extra parameters per descriptor: those that need trained weights get a tiny model."""
    from cbir.nn.train.deephash import DeepHashTrainConfig, train_deephash
    from cbir.nn.train.lda import LdaTrainConfig, train_lda
    from cbir.nn.train.metric import MetricTrainConfig, train_metric
    from cbir.nn.train.ssdh import SSDHTrainConfig, train_ssdh

    root = write_two_classes(tmp_path_factory.mktemp("dh"), n=6, size=64)
    weights = root / "dh.pt"
    cfg = DeepHashTrainConfig(bits=12, epochs=5, tile_size=64, holdout=0.0)
    train_deephash(root, weights, cfg, device="cpu")
    metric = root / "metric.pt"
    train_metric(
        root,
        metric,
        MetricTrainConfig(steps=3, tile_size=64, holdout=0.0, augmentations=1),
        device="cpu",
    )
    ssdh = root / "ssdh.pt"
    train_ssdh(
        root, ssdh, SSDHTrainConfig(bits=12, epochs=3, tile_size=64, holdout=0.0), device="cpu"
    )
    lda = root / "lda.pt"
    train_lda(root, lda, LdaTrainConfig(base_recipe="stats-lsh32", holdout=0.0), device="cpu")
    return {
        "lda": {"weights": str(lda), "device": "cpu"},
        "deephash": {"weights": str(weights), "device": "cpu"},
        "metric": {"weights": str(metric), "device": "cpu"},
        "ssdh": {"weights": str(ssdh), "device": "cpu"},
    }


@pytest.mark.parametrize("name", list_descriptors())
def test_every_descriptor(name: str, tiles: np.ndarray, descriptor_params: dict) -> None:
    d = create_descriptor(name, tile_size=224, **descriptor_params.get(name, {}))
    x = d.describe(tiles)
    assert x.shape == (len(tiles), d.spec.dim)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert not np.allclose(x[0], x[1])  # different tiles, different descriptors


@pytest.mark.parametrize("name", list_encoders())
def test_every_encoder(name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 12)).astype(np.float32)
    params = {"lsh": {"bits": 32}, "float": {"standardize": True}}.get(name, {})
    enc = create_encoder(name, input_dim=12, **params)
    enc.fit(x)
    codes = enc.encode(x)
    if enc.spec.kind == "binary":
        assert codes.shape == (100, enc.spec.bits // 8) and codes.dtype == np.uint8
    else:
        assert codes.shape == (100, 12) and codes.dtype == np.float32
        assert np.isfinite(codes).all()
    assert codes.view(np.uint8).shape[1] == enc.spec.code_bytes
    again = create_encoder(name, input_dim=12, **params)
    again.load_state(enc.state())
    np.testing.assert_array_equal(again.encode(x), codes)


def test_stats_constant_tile_is_finite() -> None:
    tile = np.full((1, 224, 224, 3), 128, np.uint8)
    x = StatsDescriptor().describe(tile)[0]
    assert np.isfinite(x).all()
    assert x[0] == pytest.approx(128 / 255, abs=1e-6)  # MEAN
    assert x[1] == 0.0  # SD
    assert x[5] == 0.0  # histogram entropy of one grey level
    assert x[6] == pytest.approx(1.0)  # GLCM ASM: all mass in one cell
    assert x[8] == 0.0  # GLCM contrast


def test_stats_glcm_on_stripes_matches_hand_computation() -> None:
    # Columns alternate 0 / 255 every 5 px: at offset 5 px, 0 degrees, every pair differs
    # by the full range, so contrast = (levels - 1)^2 and dissimilarity = levels - 1.
    cols = (np.arange(224) // 5) % 2 * 255
    tile = np.repeat(np.repeat(cols[None, :, None], 224, 0), 3, 2).astype(np.uint8)[None]
    d = StatsDescriptor(glcm_levels=64)
    x = d.describe(tile)[0]
    assert x[8] == pytest.approx(63.0**2)
    assert x[10] == pytest.approx(63.0)
    assert x[0] == pytest.approx(0.5, abs=0.01)


def test_lsh_bit_semantics_and_packing() -> None:
    enc = LshEncoder(input_dim=2, bits=8, seed=1, standardize=False)
    enc.fit(np.zeros((1, 2), np.float32))
    w = enc.hyperplanes
    x = w[:1] * 3.0  # above hyperplane 0 -> bit 0 is 0
    code = enc.encode(x.astype(np.float32))[0, 0]
    assert code & 1 == 0
    bits = np.unpackbits(np.array([code], np.uint8), bitorder="little")
    np.testing.assert_array_equal(bits.astype(bool), ~(x @ w.T > 0)[0])


def test_lsh_is_seeded() -> None:
    a = LshEncoder(input_dim=12, bits=32, seed=7).hyperplanes
    b = LshEncoder(input_dim=12, bits=32, seed=7).hyperplanes
    c = LshEncoder(input_dim=12, bits=32, seed=8).hyperplanes
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stats_batch_equals_scikit_image_per_tile() -> None:
    """The batched stats descriptor (OpenCV histograms, numpy GLCM properties) equals
    scikit-image's graycomatrix / graycoprops tile by tile, to float32 rounding."""
    from cbir.descriptors.stats import StatsDescriptor
    from cbir.slides.sample import sample_image

    d = StatsDescriptor()
    img = sample_image()
    rng = np.random.default_rng(0)
    tiles = np.concatenate(
        [
            np.stack([img[y : y + 224, x : x + 224] for y in (0, 700, 1500) for x in (0, 900)]),
            rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8),  # noise
            np.full((1, 224, 224, 3), 200, np.uint8),  # constant: correlation 1
            np.zeros((1, 224, 224, 3), np.uint8),  # black: mean 0
        ]
    )
    batch = d.describe(tiles)
    one = np.stack([d.describe_one(t) for t in tiles]).astype(np.float32)
    np.testing.assert_allclose(batch, one, rtol=1e-6, atol=1e-7)
    assert batch[9, 11] == 1.0 and d.describe(tiles[:0]).shape == (0, 12)


def test_a_package_declares_its_modules_and_their_traits(tmp_path: Path) -> None:
    """A new component is one module: its file name declares it (helpers are skipped),
    its decorator registers it with its traits, and nothing is imported until first use."""
    import sys

    pkg = tmp_path / "somestage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("raise RuntimeError('a helper is never a component')\n")
    reg: Registry[object] = Registry("thing")
    sys.path.insert(0, str(tmp_path))
    try:
        (pkg / "fresh.py").write_text(
            "import registry_under_test as r\n"
            "@r.REG.register('fresh', learned=True)\n"
            "def make(**params):\n"
            "    return dict(params)\n"
        )
        holder = tmp_path / "registry_under_test.py"
        holder.write_text("REG = None\n")
        import registry_under_test

        registry_under_test.REG = reg
        reg.declare_modules("somestage", [str(pkg)], helpers={"helper"})
        assert reg.names() == ["fresh"] and not reg.loaded("fresh")
        assert reg.trait("fresh", "learned") is True
        assert reg.trait("fresh", "other", 3) == 3
        assert reg.create("fresh", a=1) == {"a": 1}
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("registry_under_test", "somestage", "somestage.fresh"):
            sys.modules.pop(name, None)
