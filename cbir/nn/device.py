"""Device choice (CUDA when available, else CPU; `--device` overrides) and the
inference context networks describe tiles under (mixed precision on CUDA)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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
#: (float16 autocast on CUDA, float32 on CPU), "fp32", "fp16" or "bf16" (autocast on
#: any device).
PRECISION_ENV = "CBIR_PRECISION"
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype `inference` autocasts to on `device` (None: float32 throughout)."""
    choice = os.environ.get(PRECISION_ENV, "auto").lower()
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
