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


#: Batches a GPU may have queued before the host waits for the oldest one's rows.
IN_FLIGHT = 4


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

    Outputs come back IN_FLIGHT batches late: on a GPU the host pins and sends the next
    batches while the device computes this one, instead of waiting for each batch's rows,
    and it never runs further ahead (pinned buffers and device outputs stay bounded).
    `graphs` (CUDA): the same computation replayed from CUDA graphs, for batches of at
    least MIN_GRAPH_BATCH tiles unless CBIR_CUDA_GRAPHS=0 (cbir.nn.cuda_graphs)."""
    out: list[torch.Tensor] = []  # rows on the host
    queued: list[torch.Tensor] = []  # rows still on the device
    replay = graphs is not None and graphs_enabled(graphs.device)
    with inference(device if device is not None else torch.device("cpu")):
        for i in range(0, len(tiles), batch_size):
            b = tiles[i : i + batch_size]
            queued.append(graphs(b) if replay and len(b) >= MIN_GRAPH_BATCH else fn(b).float())
            if len(queued) > IN_FLIGHT:
                out.append(queued.pop(0).cpu())
        out.extend(q.cpu() for q in queued)
    if not out:
        return np.zeros((0, dim), np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)
