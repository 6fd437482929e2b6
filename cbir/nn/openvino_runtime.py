"""CPU inference through OpenVINO: the ONNX file `cbir.nn.onnx_runtime` exports, compiled
by OpenVINO's CPU plugin (the compiled model cached beside the exports) and run with one
infer request per calling thread.

On EfficientNet-Lite0 with effnet-flat's four pooled blocks (2 cores, AMD EPYC with
AVX-512) it described 32 tiles at 106-156 tiles/s against ONNX Runtime's 80-96, vectors
equal to float32 PyTorch's (precision "f32" is asked for explicitly: OpenVINO would
otherwise run bf16 on CPUs with AMX). Precision "bf16" (CBIR_PRECISION's "auto" on a CPU
with bfloat16 instructions, or "bf16": cbir.nn.onnx_runtime.cpu_engine) runs the
convolutions in bfloat16 (AVX-512 BF16 or AMX): 183-270 tiles/s there, each tile's 10
nearest tiles 98.6% those of float32 (tools/eval_precision.py).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

#: OpenVINO's INFERENCE_PRECISION_HINT for each precision it runs.
HINTS = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    """openvino (to run) and onnx (for torch's exporter) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))


class OpenVinoSession:
    """An ONNX file (input "x", one output) compiled for the CPU: `run` (n, *shape) float32
    -> (n, d) float32, callable from several threads at once (each has its own request)."""

    def __init__(
        self, path: Path, threads: int, precision: str = "fp32", cache: Path | None = None
    ) -> None:
        import openvino as ov

        config = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "INFERENCE_NUM_THREADS": max(1, threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = None
        if cache is not None:  # OpenVINO keeps the compiled model there: 0.06 s, not 0.4,
            # the next time; keyed by the model, the settings and OpenVINO's version
            try:
                core = ov.Core()
                core.set_property({"CACHE_DIR": str(cache)})
                self.compiled = core.compile_model(str(path), "CPU", config)
            except Exception:  # an unwritable or damaged cache: compile without it
                self.compiled = None
        if self.compiled is None:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        #: "bf16" or "fp32": what the plugin compiled, which a CPU may decide against
        #: the hint (what the bundle's manifest then records)
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = "bf16" if ran == "bf16" else "fp32"
        self._local = threading.local()

    def run(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: np.ascontiguousarray(x, np.float32)})
        return np.array(next(iter(out.values())), dtype=np.float32)  # a copy: the request
        # reuses its output buffer
