"""OpenVINO on the CPU (cbir.nn.openvino_runtime): float32 descriptors equal to
PyTorch's, bfloat16 ones close to them where the CPU has bfloat16, and the choice of
runtime and precision (CBIR_RUNTIME, CBIR_PRECISION) obeyed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.descriptors.backbone import BackboneDescriptor
from cbir.nn import onnx_runtime, openvino_runtime
from cbir.nn.device import PRECISION_ENV, bf16_in_cpuinfo, native_bf16
from cbir.nn.efficientnet import packaged_lite0_weights

LAYERS = ["_blocks.4", "_blocks.7", "_blocks.10", "_blocks.15"]
needs_openvino = pytest.mark.skipif(
    not openvino_runtime.available(), reason="openvino or onnx is not installed (main dependencies)"
)
needs_lite0 = pytest.mark.skipif(packaged_lite0_weights() is None, reason="no Lite0 weights")


def describer(monkeypatch: pytest.MonkeyPatch, runtime: str, precision: str) -> BackboneDescriptor:
    monkeypatch.setenv("CBIR_RUNTIME", runtime)
    monkeypatch.setenv(PRECISION_ENV, precision)
    return BackboneDescriptor(layers=LAYERS, final=False, device="cpu", batch_size=8)


def sample_tiles() -> np.ndarray:
    """(36, 224, 224, 3) overlapping tissue tiles of the embedded sample image."""
    from cbir.slides.sample import sample_image

    image = sample_image()[512:1696, 512:1696]
    return np.stack(
        [image[y : y + 224, x : x + 224] for y in range(0, 960, 160) for x in range(0, 960, 160)]
    )


def test_cpuinfo_flags_name_bf16() -> None:
    assert bf16_in_cpuinfo("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n")
    assert bf16_in_cpuinfo("flags\t: sse amx_tile amx_bf16\n")
    assert not bf16_in_cpuinfo("flags\t: fpu avx2 avx512f avx512bw avx512_vnni\n")
    assert not bf16_in_cpuinfo("model name: bf16 in a name is not a flag\n")


@needs_openvino
def test_the_runtime_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    bf16 = ("openvino", "bf16") if native_bf16() else None
    for runtime, precision, engine in [
        ("auto", "fp32", ("openvino", "fp32")),
        ("openvino", "fp32", ("openvino", "fp32")),
        ("onnx", "fp32", ("onnx", "fp32")),
        ("torch", "fp32", None),
        ("auto", "fp16", None),  # float16 on the CPU: PyTorch autocast
        ("onnx", "bf16", None),  # ONNX Runtime has no bfloat16: PyTorch
        ("auto", "bf16", bf16),
        ("auto", "auto", bf16 or ("openvino", "fp32")),
        ("onnx", "auto", ("onnx", "fp32")),
    ]:
        monkeypatch.setenv("CBIR_RUNTIME", runtime)
        monkeypatch.setenv(PRECISION_ENV, precision)
        if runtime == "onnx" and not onnx_runtime.available():
            continue
        assert onnx_runtime.cpu_engine(cpu) == engine, (runtime, precision)
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert onnx_runtime.cpu_engine(torch.device("cuda")) is None


@needs_openvino
@needs_lite0
def test_openvino_float32_gives_the_descriptors_of_pytorch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path))
    tiles = np.random.default_rng(0).integers(0, 256, (11, 224, 224, 3), dtype=np.uint8)
    ov = describer(monkeypatch, "openvino", "fp32")
    assert ov.onnx is not None and (ov.onnx.engine, ov.onnx.precision) == ("openvino", "fp32")
    got = ov.describe(tiles)  # 11 tiles: a partial batch too
    want = describer(monkeypatch, "torch", "fp32").describe(tiles)
    assert got.shape == (11, 552) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4
    assert ov.describe(tiles[:0]).shape == (0, 552)
    # several threads describe with one descriptor (the indexer's workers): each its
    # own request, the same answers
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda i: ov.describe(tiles[i : i + 4]), range(0, 8, 2)))
    for i, out in zip(range(0, 8, 2), outs, strict=True):
        assert np.abs(out - got[i : i + 4]).max() < 1e-5
    # the compiled model is cached beside the export; the next descriptor loads it
    cached = tmp_path / "onnx" / "openvino"
    assert cached.is_dir() and any(cached.iterdir())
    again = describer(monkeypatch, "openvino", "fp32")
    assert np.abs(again.describe(tiles) - got).max() < 1e-5
    for blob in cached.rglob("*.blob"):  # damaged: compiled again, the same answers
        blob.chmod(0o644)  # OpenVINO writes them read-only
        blob.write_bytes(b"not a model")
    fixed = describer(monkeypatch, "openvino", "fp32")
    assert np.abs(fixed.describe(tiles) - got).max() < 1e-5


@needs_openvino
@needs_lite0
@pytest.mark.skipif(not native_bf16(), reason="this CPU has no bfloat16 instructions")
def test_bfloat16_descriptors_keep_the_neighbours_of_float32(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path))
    tiles = sample_tiles()
    fp32 = describer(monkeypatch, "auto", "fp32").describe(tiles)
    bf16 = describer(monkeypatch, "auto", "auto")  # auto on this CPU: bfloat16 in OpenVINO
    assert bf16.onnx is not None and (bf16.onnx.engine, bf16.onnx.precision) == (
        "openvino",
        "bf16",
    )
    assert bf16.runs_at == "bfloat16"  # what the bundle's manifest records
    got = bf16.describe(tiles)
    assert not np.allclose(got, fp32, atol=1e-4)  # really computed in bfloat16
    cos = (got * fp32).sum(1)  # unit vectors
    assert cos.mean() > 0.99 and cos.min() > 0.97
    d2 = ((got[:, None] - fp32[None]) ** 2).sum(-1)
    assert (d2.argmin(1) == np.arange(len(tiles))).all()  # each tile nearest its own
    assert np.array_equal(bf16.describe(tiles[:5]), bf16.describe(tiles[:5]))


@needs_openvino
@needs_lite0
def test_a_bundle_records_the_precision_openvino_ran_at(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, generated_slide: Path
) -> None:
    import cbir
    from cbir.recipes import load_recipe
    from cbir.storage.manifest import read_manifest

    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CBIR_RUNTIME", "auto")
    recipe = load_recipe("effnet-flat")
    tiling = recipe.tiling.model_copy(update={"magnifications": (10.0,)})
    recipe = recipe.model_copy(update={"tiling": tiling})
    for precision, recorded in [
        ("auto", "bfloat16" if native_bf16() else "float32"),
        ("fp32", "float32"),
    ]:
        monkeypatch.setenv(PRECISION_ENV, precision)
        out = tmp_path / precision
        cbir.build_index([generated_slide], out, recipe, device="cpu")
        assert read_manifest(out).precision == recorded
        with cbir.open_index(out, device="cpu") as index:
            hit = index.search(f"{generated_slide}:500,380,1200,1000@10x", k=1).hits[0]
            assert abs(hit.x - 500) <= 120 and abs(hit.y - 380) <= 120


def test_heads_and_lda_record_the_precision_of_their_base() -> None:
    """A head on a backbone (its input's base) and an LDA (its base) run their base's
    network: the manifest records where that base runs (cbir.nn.precision)."""
    from types import SimpleNamespace

    from cbir.descriptors.head_input import HeadInput
    from cbir.nn.precision import network_precision

    base = SimpleNamespace(runs_at="bfloat16", device=torch.device("cpu"))
    head = SimpleNamespace(input=HeadInput(torch.device("cpu"), base=base))  # type: ignore[arg-type]
    lda = SimpleNamespace(base=base)
    assert network_precision(head) == network_precision(lda) == "bfloat16"
    plain = SimpleNamespace(base=SimpleNamespace(device=torch.device("cpu")))
    assert network_precision(plain) == "float32"
    assert network_precision(SimpleNamespace()) is None
