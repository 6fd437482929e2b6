"""CPU inference through ONNX Runtime: a network's forward exported once to ONNX (cached
on disk under a key of everything it computes) and run by an ORT session. On
EfficientNet-Lite0 with effnet-flat's four pooled blocks it ran 16 tiles in 157-171 ms
against PyTorch eager's 327-348 ms (2 cores), outputs equal to 2e-7.

The same exported file is what OpenVINO runs (cbir.nn.openvino_runtime), faster still.
`CBIR_RUNTIME` chooses: "auto" (default: OpenVINO on the CPU when `openvino` and `onnx`
are installed, as they are with cbir; else ONNX Runtime, extra `cbir[fast]`),
"torch", "onnx" or "openvino"; `cpu_engine` says which runs, given the precision
(CBIR_PRECISION: bfloat16 runs in OpenVINO or PyTorch). The cache lives in
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

RUNTIMES = ("auto", "torch", "onnx", "openvino")
#: Bump when the export changes what a cached file holds.
EXPORT_VERSION = 1


def runtime_wanted() -> str:
    """CBIR_RUNTIME, checked: "auto", "torch", "onnx" or "openvino"."""
    value = os.environ.get("CBIR_RUNTIME", "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"CBIR_RUNTIME={value!r}; valid: {', '.join(RUNTIMES)}")
    return value


def available() -> bool:
    """onnxruntime (to run) and onnx (for torch's exporter) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def cpu_engine(device: torch.device) -> tuple[str, str] | None:
    """Which exported-graph runtime runs a network on `device`, and at which precision:
    ("openvino", "fp32" | "bf16"), ("onnx", "fp32") (ONNX Runtime) or None (PyTorch, at
    cbir.nn.device.autocast_dtype), from CBIR_RUNTIME, CBIR_PRECISION, the device, the
    CPU and the installed packages. "auto" runtime: OpenVINO, else ONNX Runtime, else
    PyTorch; "auto" precision: bfloat16 when OpenVINO runs it on a CPU with bfloat16
    instructions (`native_bf16`), else float32. An asked-for bfloat16 runs in OpenVINO
    where the CPU has it (unless CBIR_RUNTIME=onnx), else in PyTorch, as float16 does.
    Naming a runtime whose packages are missing is an error."""
    from cbir.nn import openvino_runtime
    from cbir.nn.device import autocast_dtype, native_bf16, precision_choice

    wanted = runtime_wanted()
    if wanted == "torch" or device.type != "cpu":
        return None
    if wanted == "openvino" and not openvino_runtime.available():
        raise RuntimeError(
            "CBIR_RUNTIME=openvino needs openvino and onnx: pip install openvino onnx"
        )
    if wanted == "onnx" and not available():
        raise RuntimeError("CBIR_RUNTIME=onnx needs onnxruntime and onnx: pip install 'cbir[fast]'")
    openvino = wanted != "onnx" and openvino_runtime.available()
    dtype = autocast_dtype(device)
    if dtype is not None:  # ONNX Runtime computes float32 only
        bf16_here = dtype == torch.bfloat16 and native_bf16() and openvino
        return ("openvino", "bf16") if bf16_here else None
    if openvino and precision_choice() == "auto" and native_bf16():
        return "openvino", "bf16"
    if openvino:
        return "openvino", "fp32"
    return ("onnx", "fp32") if available() else None


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
    calibration batches of a static int8 model (cbir.nn.quantize) to run instead, always
    in ONNX Runtime. `engine`: "onnx" (ONNX Runtime) or "openvino" (cbir.nn.
    openvino_runtime, at `precision` "fp32" or "bf16")."""

    def __init__(
        self,
        module: nn.Module,
        example: torch.Tensor,
        key: str,
        int8: Callable[[], list[np.ndarray]] | None = None,
        engine: str = "onnx",
        precision: str = "fp32",
    ) -> None:
        self.engine, self.precision = ("onnx", "int8") if int8 is not None else (engine, precision)
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
    ) -> Callable[[np.ndarray], np.ndarray]:
        if not self.path.exists():
            self._export(module, example)
        if self.engine == "openvino":
            from cbir.nn.openvino_runtime import OpenVinoSession

            threads, cache = torch.get_num_threads(), self.path.parent / "openvino"
            session = OpenVinoSession(self.path, threads, self.precision, cache)
            self.precision = session.precision  # what it compiled (cbir.nn.precision)
            return session.run
        import onnxruntime as ort

        path = self.path
        if int8 is not None:
            from cbir.nn.quantize import quantize

            path = quantize(self.path, int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"x": x})[0]

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
        return self.session(np.ascontiguousarray(x, np.float32))
