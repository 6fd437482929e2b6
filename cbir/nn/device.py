"""Device choice: CUDA when available, else CPU; `--device` overrides."""

from __future__ import annotations

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
