"""What a write transaction stages: the collection state (fitted at build, reused by
every later segment) and new segments. The writer (writer.py), the per-tile products
(artifacts.py) and publishing (publish.py) share these types; they import nothing of
those modules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir.files import sha256_file
from cbir.index.local import LocalIndex
from cbir.index.tile import TileIndex
from cbir.nn.precision import network_precision
from cbir.storage.manifest import (
    EMPTY_INDEX_FILE,
    EMPTY_LOCAL_INDEX_FILE,
    LOCAL_STATE_FILE,
    LOCAL_WEIGHTS_FILE,
    META_DIR,
    SCALE_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    LocalManifest,
    Manifest,
    state_name,
)
from cbir.storage.metadata import MetadataStore

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage
    from cbir.pipeline import TilePipeline


class CollectionState:
    """The fitted pipeline, weights, local stage and the empty (trained) indexes every
    segment starts from. `name` is its directory; `stage` is set while it is new."""

    def __init__(
        self,
        pipeline: TilePipeline,
        empty_index: TileIndex | None,
        scale_weights: Path | None = None,
        local: LocalStage | None = None,
        empty_local: LocalIndex | None = None,
        name: str | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.empty_index = empty_index  # None until fitted (a new bundle's first rows)
        self.scale_weights = scale_weights
        self.local = local
        self.empty_local = empty_local
        self.name = name  # None: new, written at publish
        self.manifest = manifest  # the manifest the state was read from
        self.stage: Path | None = None

    @property
    def new(self) -> bool:
        return self.name is None

    def write(self, root: Path, generation: int) -> dict[str, object]:
        """Stage a new state's files; returns its manifest fields."""
        name = state_name(generation)
        stage = self.stage = root / f".tmp-{os.getpid()}-{name}"
        stage.mkdir()
        self.pipeline.save_state(stage / STATE_FILE)
        self.empty_index.save(stage / EMPTY_INDEX_FILE)
        sums = {EMPTY_INDEX_FILE: sha256_file(stage / EMPTY_INDEX_FILE)}
        weights_sha = _copy_in(self.pipeline.weights, stage / WEIGHTS_FILE)
        fields: dict[str, object] = {
            "state": name,
            "pipeline_sha256": sha256_file(stage / STATE_FILE),
            "weights_sha256": weights_sha,
            "scale_weights_sha256": _copy_in(self.scale_weights, stage / SCALE_FILE),
            "local": None,
            "precision": network_precision(
                self.pipeline.descriptor, self.local.extractor if self.local else None
            ),
            "state_sha256": sums,
        }
        if self.local is not None:
            assert self.empty_local is not None
            self.empty_local.save(stage / EMPTY_LOCAL_INDEX_FILE)
            sums[EMPTY_LOCAL_INDEX_FILE] = sha256_file(stage / EMPTY_LOCAL_INDEX_FILE)
            self.local.save_state(stage / LOCAL_STATE_FILE)
            source, weights_file, sha = self.local.weights, None, None
            if source is not None:
                own = self.pipeline.weights
                if own is not None and source.resolve() == own.resolve():
                    weights_file, sha = WEIGHTS_FILE, weights_sha
                else:
                    weights_file = LOCAL_WEIGHTS_FILE
                    sha = _copy_in(source, stage / LOCAL_WEIGHTS_FILE)
            fields["local"] = LocalManifest(
                spec=self.local.spec,
                features=0,
                state_sha256=sha256_file(stage / LOCAL_STATE_FILE),
                weights_file=weights_file,
                weights_sha256=sha,
            )
        return fields

    def discard_stage(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)


def _copy_in(source: Path | None, target: Path) -> str | None:
    if source is None:
        return None
    shutil.copyfile(source, target)
    return sha256_file(target)


class SegmentStage:
    """A segment being written: a fresh LMDB store (`meta`) and the rows of its tile
    and local indexes, finished into files by `finish`."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.sources: tuple[str, ...] = ()  # the segments a merge copies (oldest first)
        path.mkdir()
        try:
            (path / META_DIR).mkdir()
            self.meta: MetadataStore | None = MetadataStore(path / META_DIR, readonly=False)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self._rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def stage_rows(self, name: str, x: np.ndarray, ids: np.ndarray) -> None:
        """Rows of product `name`'s index: (n, ...) codes or vectors with (n,) int64 ids."""
        self._rows.setdefault(name, []).append((x, np.asarray(ids, np.int64)))

    def staged_rows(self, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return self._rows.get(name, [])

    def map_rows(self, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace each staged block x of product `name` by fn(x) (same rows and ids)."""
        self._rows[name] = [(fn(x), ids) for x, ids in self.staged_rows(name)]

    def rows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """All staged rows of product `name`, concatenated: (n, ...) and (n,) ids."""
        parts = self.staged_rows(name)
        if not parts:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        return np.concatenate([x for x, _ in parts]), np.concatenate([i for _, i in parts])

    @property
    def staged(self) -> bool:
        """Whether any tile rows are staged."""
        return bool(self.staged_rows("codes"))

    @property
    def staged_tiles(self) -> int:
        return sum(len(ids) for _, ids in self.staged_rows("codes"))

    def discard(self) -> None:
        if self.meta is not None:
            self.meta.close()
            self.meta = None
        shutil.rmtree(self.path, ignore_errors=True)
