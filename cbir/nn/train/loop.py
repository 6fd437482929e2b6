"""The one optimisation loop of every `cbir train`: rounds (epochs, or single steps) of
batches, each batch a loss, one optimiser (and optional scheduler) step per batch, the
mean loss of each round recorded and the progress bar advanced. Methods differ only in
how they draw batches and what a batch's loss is."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from cbir.progress import NoProgress, Progress

#: One round's batches: (batch, size) pairs; the size weights the batch in the round's mean.
Batches = Callable[[], Iterable[tuple[Any, int]]]


def fit(
    optimizer: torch.optim.Optimizer,
    rounds: int,
    batches: Batches,
    loss: Callable[[Any], torch.Tensor],
    progress: Progress | None = None,
    label: str = "train",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    before_round: Callable[[], object] | None = None,
) -> list[float]:
    """Run `rounds` rounds; loss(batch) -> scalar tensor. Returns the size-weighted mean
    loss of each round (nan for a round without batches)."""
    progress = progress or NoProgress()
    progress.start(label, rounds, "rounds")
    means = []
    for _ in range(rounds):
        if before_round is not None:
            before_round()
        total, count = 0.0, 0
        for batch, size in batches():
            value = loss(batch)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(value.detach()) * size
            count += size
        means.append(total / count if count else float("nan"))
        progress.advance(1)
    return means


def shuffled(indices: Sequence[int], batch_size: int, generator: torch.Generator) -> Batches:
    """An epoch: `indices` in a new random order, cut into (b,) int64 tensors."""
    pool = torch.as_tensor(list(indices), dtype=torch.int64)

    def epoch() -> Iterator[tuple[torch.Tensor, int]]:
        order = pool[torch.randperm(len(pool), generator=generator)]
        return ((b, len(b)) for b in order.split(batch_size))

    return epoch


def whole(batch: Any, size: int) -> Batches:
    """Full-batch training: every round is the one batch."""
    return lambda: [(batch, size)]


def sampled(draw: Callable[[], np.ndarray]) -> Batches:
    """One drawn batch per round (a step): draw() -> (b,) indices."""

    def step() -> list[tuple[np.ndarray, int]]:
        idx = draw()
        return [(idx, len(idx))]

    return step


def one_cycle(
    optimizer: torch.optim.Optimizer, lr: float, epochs: int, n: int, batch_size: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule over `epochs` epochs of `n` items in batches of `batch_size`."""
    steps = max(1, epochs) * max(1, -(-n // batch_size))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)


def predict(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    indices: Sequence[int],
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    """fn over x[indices] in batches, without gradients -> outputs concatenated on the CPU."""
    idx = torch.as_tensor(list(indices), dtype=torch.int64)
    with torch.no_grad():
        return torch.cat([fn(x[b].to(device)).cpu() for b in idx.split(batch_size)])


def accuracy(
    logits: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: Sequence[int],
    device: torch.device,
    batch_size: int = 64,
) -> float | None:
    """Classification accuracy of argmax(logits) on x[indices]; None without indices."""
    if not len(indices):
        return None
    pred = predict(logits, x, indices, device, batch_size).argmax(1)
    return float((pred == y[list(indices)]).float().mean())


def window_losses(losses: list[float]) -> tuple[float, float]:
    """(first, last): the means of the first and last tenth of per-step losses (noisy
    single-batch steps), or the first and last values of per-epoch losses."""
    window = max(1, len(losses) // 10)
    return float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
