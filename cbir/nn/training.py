"""What every `cbir train` on labelled tiles shares: the seeded RNG, the device, the
tiles and their stratified split, and the end (verdict in the spec, atomic weights file,
elapsed time). Each method keeps its own model, loss and loop."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from cbir.nn.device import resolve_device
from cbir.nn.verdict import Verdict
from cbir.nn.weights import save_weights
from cbir.progress import NoProgress, Progress
from cbir.tileset import LabelledTiles, load_labelled_tiles, load_tiles


def stratified_split(labels: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, holdout) indices: `holdout` of each class, at least one per side per class."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in sorted(set(labels)):
        idx = np.array([i for i, label in enumerate(labels) if label == cls])
        rng.shuffle(idx)
        n_held = min(len(idx) - 1, max(1, round(holdout * len(idx)))) if holdout > 0 else 0
        held += idx[:n_held].tolist()
        train += idx[n_held:].tolist()
    return sorted(train), sorted(held)


@dataclass
class TrainingRun:
    """One training run. `y` (n,) int64 class index of each tile (sorted class names);
    `train_idx` / `held_idx` the stratified split."""

    data: LabelledTiles
    classes: list[str]
    y: np.ndarray
    train_idx: list[int]
    held_idx: list[int]
    device: torch.device
    progress: Progress
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def begin(
        cls,
        tiles_root: Path,
        labels_csv: Path | None,
        holdout: float,
        seed: int,
        device: str | None,
        progress: Progress | None = None,
        labelled: bool = True,
    ) -> TrainingRun:
        """Seed torch, pick the device, read the tile list (labels required unless
        `labelled` is False: then they only stratify the split) and split it."""
        started = time.perf_counter()
        torch.manual_seed(seed)
        dev = resolve_device(device)
        data = (load_labelled_tiles if labelled else load_tiles)(tiles_root, labels_csv)
        classes = sorted(set(data.labels))
        y = np.array([classes.index(label) for label in data.labels], dtype=np.int64)
        train_idx, held_idx = stratified_split(data.labels, holdout, seed)
        return cls(data, classes, y, train_idx, held_idx, dev, progress or NoProgress(), started)

    @property
    def chance(self) -> float:
        """Accuracy of a guess: 1 / classes."""
        return 1.0 / max(1, len(self.classes))

    def spec(self, config: BaseModel, **extra: Any) -> dict[str, Any]:
        """The spec fields every weights file has (classes, split, config) plus `extra`."""
        return {
            **extra,
            "classes": self.classes,
            "train_paths": [self.data.paths[i] for i in self.train_idx],
            "holdout_paths": [self.data.paths[i] for i in self.held_idx],
            "config": config.model_dump(),
        }

    def save(
        self,
        out: str | os.PathLike[str],
        model: str,
        spec: dict[str, Any],
        state: dict[str, torch.Tensor],
        verdict: Verdict,
    ) -> str:
        """Write the weights atomically with the verdict in their spec; their sha256."""
        return save_weights(out, model, {**spec, "verdict": verdict.model_dump()}, state)

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)
