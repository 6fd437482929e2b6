"""Shared plumbing of the network descriptors: loading parts of a weights file into
modules, and batched inference over tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cbir.nn.device import inference
from cbir.nn.weights import WeightsError


def load_parts(weights: str, state: dict[str, torch.Tensor], parts: dict[str, nn.Module]) -> None:
    """Load `state[prefix.key]` into `parts[prefix]` for each prefix (strict)."""
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(sub)
        except RuntimeError as exc:
            raise WeightsError(f"{weights}: weights do not fit the {prefix} ({exc})") from exc


def run_batched(
    tiles: np.ndarray,
    batch_size: int,
    dim: int,
    fn: Callable[[np.ndarray], torch.Tensor],
    device: torch.device | None = None,
) -> np.ndarray:
    """Apply fn to (b, t, t, 3) uint8 batches of tiles under inference mode (mixed
    precision on CUDA: `cbir.nn.device.inference`) -> (n, dim) float32 (an empty batch
    gives (0, dim))."""
    out = []
    with inference(device if device is not None else torch.device("cpu")):
        for i in range(0, len(tiles), batch_size):
            out.append(fn(tiles[i : i + batch_size]).float().cpu().numpy())
    if not out:
        return np.zeros((0, dim), np.float32)
    return np.concatenate(out).astype(np.float32)
