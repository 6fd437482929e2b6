"""Shared plumbing of the network descriptors: their base class (batched inference over
tiles), the weights a descriptor needs or a seeded random init, and loading parts of a
weights file into modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cbir.files import sha256_file
from cbir.nn.cuda_graphs import MIN_GRAPH_BATCH, GraphedForward, graphs_enabled
from cbir.nn.device import inference
from cbir.nn.weights import WeightsError, load_weights
from cbir.specs import DescriptorSpec

#: Seed of a network descriptor's weights when no weights file is given (a fixed
#: random-feature extractor).
RANDOM_INIT_SEED = 0


class NetworkDescriptor:
    """A descriptor that runs a network: `describe` runs `forward` over batches of
    `batch_size` tiles on `device` (run_batched), replayed from CUDA `graphs` when set."""

    spec: DescriptorSpec
    device: torch.device
    batch_size: int
    graphs: GraphedForward | None = None

    def forward(self, tiles: np.ndarray) -> torch.Tensor:
        """(b, t, t, 3) uint8 tiles -> (b, spec.dim) on the device."""
        raise NotImplementedError

    def describe(self, tiles: np.ndarray) -> np.ndarray:
        """(n, t, t, 3) uint8 RGB tiles -> (n, spec.dim) float32."""
        return run_batched(
            tiles, self.batch_size, self.spec.dim, self.forward, self.device, self.graphs
        )


@dataclass(frozen=True)
class Trained:
    """A weights file as a descriptor is built from it: its path, spec and state, and the
    tile size and device the descriptor is made for."""

    weights: str
    spec: dict[str, Any]
    state: dict[str, Any]
    tile_size: int
    device: str | None


class TrainedDescriptor(NetworkDescriptor):
    """A network descriptor that exists only trained (its weights file is required): the
    subclass's `build` makes its modules from the weights file and returns its output
    dim and its DescriptorSpec params (the weights' sha256 is added here)."""

    name: ClassVar[str]

    def __init__(
        self,
        tile_size: int = 224,
        weights: str | None = None,
        batch_size: int = 32,
        device: str | None = "auto",
    ) -> None:
        spec, state = trained_weights(weights, self.name)
        assert weights is not None
        self.batch_size = batch_size
        dim, params = self.build(Trained(weights, spec, state, tile_size, device))
        self.spec = DescriptorSpec(
            name=self.name,
            dim=dim,
            tile_size=tile_size,
            params={**params, "weights_sha256": sha256_file(Path(weights))},
        )

    def build(self, t: Trained) -> tuple[int, dict[str, Any]]:
        """Make the modules (and set `device`); (output dim, spec params)."""
        raise NotImplementedError


def trained_weights(weights: str | None, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(spec, state) of the weights file a descriptor cannot do without (`cbir train
    <model>` makes it)."""
    if weights is None:
        raise WeightsError(f"the {model} descriptor needs --weights (cbir train {model})")
    return load_weights(weights, model)


def weights_or_seed(
    weights: str | None, model: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """(spec, state, id) of a weights file (id: its sha256), or, without one, torch seeded
    from RANDOM_INIT_SEED and (None, None, the seed's id)."""
    if weights is None:
        torch.manual_seed(RANDOM_INIT_SEED)
        return None, None, f"random-init-seed-{RANDOM_INIT_SEED}"
    spec, state = load_weights(weights, model)
    return spec, state, sha256_file(Path(weights))


def load_parts(weights: str, state: dict[str, torch.Tensor], parts: dict[str, nn.Module]) -> None:
    """Load `state[prefix.key]` into `parts[prefix]` for each prefix (strict); prefix ""
    loads the whole state."""
    for prefix, module in parts.items():
        sub = (
            {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if prefix
            else state
        )
        try:
            module.load_state_dict(sub)
        except RuntimeError as exc:
            what = prefix or type(module).__name__
            raise WeightsError(f"{weights}: weights do not fit the {what} ({exc})") from exc


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
