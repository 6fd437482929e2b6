"""Which precision a bundle's networks described tiles at, recorded in the manifest, and
a warning when this process would describe queries or added slides at another one
(`CBIR_PRECISION`, or a GPU's float16 against a CPU's float32). Imports torch only
when a component is a network (it is loaded already then)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("cbir")

#: Manifest names -> the CBIR_PRECISION value that gives them.
ENV_VALUE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _holders(component: object) -> list[object]:
    """The component and what runs its network: its head input, that input's base
    descriptor (heads on a backbone), its own base (LDA)."""
    head = getattr(component, "input", None)
    found = [component, head, getattr(head, "base", None), getattr(component, "base", None)]
    return [h for h in found if h is not None]


def _device(component: object) -> object | None:
    """A network component's torch device (descriptors, heads on a base, extractors)."""
    for holder in _holders(component):
        device = getattr(holder, "device", None)
        if device is not None and type(device).__module__.startswith("torch"):
            return device
    return None


def network_precision(*components: object) -> str | None:
    """The precision the first network among `components` runs inference at here
    ("float32", "float16", "bfloat16"); None when none is a network. A component that
    runs outside PyTorch says so in `runs_at` (e.g. a backbone in OpenVINO at bfloat16)."""
    for c in components:
        for holder in _holders(c):
            runs_at = getattr(holder, "runs_at", None)
            if isinstance(runs_at, str):
                return runs_at
        device = _device(c)
        if device is not None:
            import torch

            from cbir.nn.device import autocast_dtype

            return str(autocast_dtype(device) or torch.float32).removeprefix("torch.")
    return None


def warn_if_different(root: Path, recorded: str | None, current: str | None) -> None:
    """One warning line when the bundle's networks ran at another precision than this
    process's would (descriptors then differ slightly: codes near a threshold flip)."""
    if recorded is None or current is None or recorded == current:
        return
    log.warning(
        "%s: its tiles were described at %s, this process describes at %s; for the same "
        "descriptors set CBIR_PRECISION=%s",
        root,
        recorded,
        current,
        ENV_VALUE.get(recorded, recorded),
    )
