"""Shared plumbing of the network descriptors: loading parts of a weights file into
modules, and batched inference over tiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cbir.nn.cuda_graphs import MIN_GRAPH_BATCH, GraphedForward, graphs_enabled
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
    graphs: GraphedForward | None = None,
) -> np.ndarray:
    """Apply fn to (b, t, t, 3) uint8 batches of tiles under inference mode (mixed
    precision on CUDA: `cbir.nn.device.inference`) -> (n, dim) float32 (an empty batch
    gives (0, dim)).

    Outputs stay where fn computed them until every batch is queued and come back in one
    copy: on a GPU the host pins and sends batch i + 1 while the device computes batch i,
    instead of waiting for each batch's rows. `graphs` (CUDA): the same computation
    replayed from CUDA graphs, for batches of at least MIN_GRAPH_BATCH tiles unless
    CBIR_CUDA_GRAPHS=0 (cbir.nn.cuda_graphs)."""
    out = []
    replay = graphs is not None and graphs_enabled(graphs.device)
    with inference(device if device is not None else torch.device("cpu")):
        for i in range(0, len(tiles), batch_size):
            b = tiles[i : i + batch_size]
            out.append(graphs(b) if replay and len(b) >= MIN_GRAPH_BATCH else fn(b).float())
    if not out:
        return np.zeros((0, dim), np.float32)
    return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)
