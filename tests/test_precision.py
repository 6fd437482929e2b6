"""Mixed precision of network inference (`cbir.nn.device.inference`): float16 autocast
on CUDA by default, float32 on CPU, CBIR_PRECISION to choose. No GPU here: the
autocast path is exercised on CPU with bfloat16, against float32."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import cbir
from cbir.delf.extract import DelfExtractor
from cbir.descriptors.cnn import CnnDescriptor
from cbir.errors import CbirError
from cbir.nn.device import PRECISION_ENV, autocast_dtype
from cbir.storage.manifest import read_manifest


def test_precision_defaults_and_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert autocast_dtype(cpu) is None and autocast_dtype(cuda) == torch.float16
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert autocast_dtype(cuda) is None
    monkeypatch.setenv(PRECISION_ENV, "BF16")
    assert autocast_dtype(cpu) == torch.bfloat16
    monkeypatch.setenv(PRECISION_ENV, "int8")
    with pytest.raises(CbirError, match="CBIR_PRECISION='int8'"):
        autocast_dtype(cpu)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_autocast_gives_float32_descriptors_close_to_float32_inference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiles = np.random.default_rng(0).integers(0, 255, (4, 224, 224, 3)).astype(np.uint8)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    cnn = CnnDescriptor(device="cpu")
    delf = DelfExtractor(trunk="small-dense", device="cpu", scales=[1.0])
    full = cnn.describe(tiles)
    _, g_full = delf.extract_batch_pooled(tiles)
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    mixed = cnn.describe(tiles)
    feats, g_mixed = delf.extract_batch_pooled(tiles)
    assert mixed.dtype == np.float32 and g_mixed is not None and g_mixed.dtype == np.float32
    assert feats[0].descriptors.dtype == np.float32
    assert not np.array_equal(mixed, full)  # autocast ran
    assert cosines(mixed, full).min() > 0.98
    assert g_full is not None and cosines(g_mixed, g_full).min() > 0.98


def test_bundle_records_its_precision_and_warns_on_another(
    tmp_path: Path,
    generated_slide: Path,
    second_slide: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(PRECISION_ENV, "auto")
    cbir.build_index([generated_slide], tmp_path / "stats", "stats-lsh32")
    cbir.build_index([generated_slide], tmp_path / "cnn", "cnn-flat", device="cpu", untrained=True)
    assert read_manifest(tmp_path / "stats").precision is None  # no network
    assert read_manifest(tmp_path / "cnn").precision == "float32"
    tile = f"{generated_slide}:448,224,224,224@40x"
    with caplog.at_level(logging.WARNING, logger="cbir"):
        with cbir.open_index(tmp_path / "cnn", device="cpu") as index:
            index.search(tile, k=1)
        assert not caplog.records
        monkeypatch.setenv(PRECISION_ENV, "bf16")
        with cbir.open_index(tmp_path / "cnn", device="cpu") as index:
            assert not caplog.records  # opening builds no network: nothing to warn about
            index.search(tile, k=1)  # the network is built: the warning comes now
        cbir.add_slides(tmp_path / "cnn", [second_slide], device="cpu")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) >= 2 and all("CBIR_PRECISION=fp32" in w for w in warnings)
    assert "described at float32, this process describes at bfloat16" in warnings[0]
    assert read_manifest(tmp_path / "cnn").precision == "float32"  # the state's, kept
