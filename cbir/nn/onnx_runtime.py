"""CPU inference through ONNX Runtime: a network's forward exported once to ONNX (cached
on disk under a key of everything it computes) and run by an ORT session. On
EfficientNet-Lite0 with effnet-flat's four pooled blocks it ran 16 tiles in 157-171 ms
against PyTorch eager's 327-348 ms (2 cores), outputs equal to 2e-7.

`CBIR_RUNTIME` chooses: "auto" (default: ONNX Runtime on the CPU when `onnxruntime` and
`onnx` are installed, extra `cbir[fast]`), "torch" or "onnx". The cache lives in
`$CBIR_CACHE_DIR/onnx` (default ~/.cache/cbir/onnx); a file is written whole (a temporary
name, then renamed), so a killed export leaves no half model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("cbir")

RUNTIMES = ("auto", "torch", "onnx")
#: Bump when the export changes what a cached file holds.
EXPORT_VERSION = 1


def runtime_wanted() -> str:
    """CBIR_RUNTIME, checked: "auto", "torch" or "onnx"."""
    value = os.environ.get("CBIR_RUNTIME", "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"CBIR_RUNTIME={value!r}; valid: {', '.join(RUNTIMES)}")
    return value


def available() -> bool:
    """onnxruntime (to run) and onnx (for torch's exporter) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def use_onnx(device: torch.device) -> bool:
    """Whether a network on `device` runs through ONNX Runtime (CBIR_RUNTIME, the CPU,
    the packages); "onnx" without the packages is an error."""
    wanted = runtime_wanted()
    if wanted == "torch" or device.type != "cpu":
        return False
    if not available():
        if wanted == "onnx":
            raise RuntimeError(
                "CBIR_RUNTIME=onnx needs onnxruntime and onnx: pip install 'cbir[fast]'"
            )
        return False
    return True


def int8_runtime_check() -> None:
    """An int8 network runs only in ONNX Runtime: refuse (RecipeError, one line) when
    CBIR_RUNTIME is "torch" or the packages are missing."""
    from cbir.errors import RecipeError

    if runtime_wanted() == "torch":
        raise RecipeError("CBIR_RUNTIME=torch, but an int8 descriptor runs in ONNX Runtime")
    if not available():
        raise RecipeError(
            "an int8 descriptor runs in ONNX Runtime: pip install 'cbir[fast]' "
            "(onnxruntime and onnx)"
        )


def cache_dir() -> Path:
    root = os.environ.get("CBIR_CACHE_DIR") or Path.home() / ".cache" / "cbir"
    return Path(root) / "onnx"


class OnnxForward:
    """`module` (n, *shape) float32 -> (n, d) float32, exported with a dynamic batch and
    run by ONNX Runtime on the CPU. `key`: names what the module computes (weights,
    layers, pooling...): the cached file is `<cache>/<key>.onnx`. `int8`: the
    calibration batches of a static int8 model (cbir.nn.quantize) to run instead."""

    def __init__(
        self,
        module: nn.Module,
        example: torch.Tensor,
        key: str,
        int8: Callable[[], list[np.ndarray]] | None = None,
    ) -> None:
        tag = f"{key}-t{torch.__version__}-e{EXPORT_VERSION}".replace("+", "_")
        self.path = cache_dir() / f"{tag}.onnx"
        try:
            self.session = self._session(module, example, int8)
        except Exception:  # a damaged cache file: export (and quantise) again, once
            self.path.unlink(missing_ok=True)
            if int8 is not None:
                from cbir.nn.quantize import int8_path

                int8_path(self.path).unlink(missing_ok=True)
            self.session = self._session(module, example, int8)

    def _session(
        self,
        module: nn.Module,
        example: torch.Tensor,
        int8: Callable[[], list[np.ndarray]] | None,
    ):  # type: ignore[no-untyped-def]
        import onnxruntime as ort

        if not self.path.exists():
            self._export(module, example)
        path = self.path
        if int8 is not None:
            from cbir.nn.quantize import quantize

            path = quantize(self.path, int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _export(self, module: nn.Module, example: torch.Tensor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    tmp,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                    opset_version=17,
                    dynamo=False,
                )
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("exported %s", self.path)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, *shape) float32 -> (n, d) float32."""
        return self.session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
