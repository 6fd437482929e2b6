"""Device choice (CUDA when available, else CPU; `--device` overrides) and the
inference context networks describe tiles under (mixed precision on CUDA)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cbir.errors import CbirError


def resolve_device(name: str | None = "auto") -> torch.device:
    """ "auto" (or None) -> cuda if available else cpu; "cpu", "cuda", "cuda:1" as given."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CbirError(f"--device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CbirError(f"--device {name}: CUDA is not available on this machine")
    return device


def for_inference(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A network ready to describe tiles: on `device`, in eval mode, its weights in
    channels-last layout (what oneDNN and cuDNN convolve fastest; tiles arrive NHWC).
    Returns the module."""
    return module.to(device).eval().to(memory_format=torch.channels_last)


#: Environment variable choosing the precision networks run inference at: "auto"
#: (float16 autocast on CUDA; float32 on the CPU, except networks run by OpenVINO on a
#: CPU with bfloat16 instructions: bfloat16, cbir.nn.onnx_runtime.cpu_engine), "fp32",
#: "fp16" or "bf16" (on any device).
PRECISION_ENV = "CBIR_PRECISION"
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: /proc/cpuinfo flags of x86 CPUs with bfloat16 instructions (AVX-512 BF16, AMX).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def native_bf16() -> bool:
    """This CPU has bfloat16 instructions (Linux: a flag in /proc/cpuinfo). Without them
    bfloat16 is emulated, slower than float32, so "auto" never picks it there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bf16_in_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def bf16_in_cpuinfo(text: str) -> bool:
    """/proc/cpuinfo's text names a bfloat16 instruction set (BF16_FLAGS) among the
    first CPU's flags."""
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return not BF16_FLAGS.isdisjoint(flags.split(":", 1)[-1].split())


def precision_choice() -> str:
    """CBIR_PRECISION as given, lower case ("auto" when unset)."""
    return os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype `inference` autocasts to on `device` (None: float32 throughout)."""
    choice = precision_choice()
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else None
    if choice == "fp32":
        return None
    if choice not in _AUTOCAST:
        raise CbirError(f"{PRECISION_ENV}={choice!r}: expected auto, fp32, fp16 or bf16")
    return _AUTOCAST[choice]


@contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """`torch.inference_mode`, with autocast to `autocast_dtype(device)` (mixed
    precision: convolutions and matmuls in float16 on CUDA's tensor cores, reductions
    and norms in float32). Callers take outputs back to float32."""
    dtype = autocast_dtype(device)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device.type, dtype=dtype):
                yield
