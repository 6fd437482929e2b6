"""What every `cbir train` shares: the seeded RNG, the device, the progress bar and the
end (verdict in the spec, atomic weights file, elapsed time) (`Run`); for training on
labelled tiles also the tiles and their stratified split (`TrainingRun`). Each method
keeps its own model and loss; the loop is cbir.nn.train.loop.fit."""

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
from cbir.slides.tileset import LabelledTiles, load_labelled_tiles, load_tiles


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


@dataclass(kw_only=True)
class Run:
    """Seeded torch, the device and progress of one training run, and its end."""

    device: torch.device
    progress: Progress
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, seed: int, device: str | None, progress: Progress | None = None) -> Run:
        """Seed torch and pick the device."""
        started = time.perf_counter()
        torch.manual_seed(seed)
        dev = resolve_device(device)
        return cls(device=dev, progress=progress or NoProgress(), started=started)

    def finish(
        self,
        out: str | os.PathLike[str],
        model: str,
        spec: dict[str, Any],
        state: dict[str, torch.Tensor],
        verdict: Verdict,
    ) -> dict[str, Any]:
        """Write the weights atomically with the verdict in their spec; the fields every
        report has (method.TrainReport: weights, their sha256, verdict, device, seconds; a
        run on tiles adds its split)."""
        sha = save_weights(out, model, {**spec, "verdict": verdict.model_dump()}, state)
        return {
            "weights": str(out),
            "sha256": sha,
            "verdict": verdict,
            "device": str(self.device),
            "seconds": self.seconds,
            **self.counts(),
        }

    def counts(self) -> dict[str, int]:
        return {}

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)


@dataclass(kw_only=True)
class TrainingRun(Run):
    """One training run on labelled tiles. `y` (n,) int64 class index of each tile
    (sorted class names); `train_idx` / `held_idx` the stratified split."""

    data: LabelledTiles
    classes: list[str]
    y: np.ndarray
    train_idx: list[int]
    held_idx: list[int]

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
        run = Run.start(seed, device, progress)
        data = (load_labelled_tiles if labelled else load_tiles)(tiles_root, labels_csv)
        classes = sorted(set(data.labels))
        y = np.array([classes.index(label) for label in data.labels], dtype=np.int64)
        train_idx, held_idx = stratified_split(data.labels, holdout, seed)
        return cls(
            device=run.device,
            progress=run.progress,
            started=run.started,
            data=data,
            classes=classes,
            y=y,
            train_idx=train_idx,
            held_idx=held_idx,
        )

    def counts(self) -> dict[str, int]:
        """The split's sizes (method.TilesReport)."""
        return {"train_tiles": len(self.train_idx), "holdout_tiles": len(self.held_idx)}

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
