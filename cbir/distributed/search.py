"""Sharded search on a Ray cluster (`cbir serve --ray`, `open_index(..., ray=...)`): the
Faiss indexes of a bundle's segments are placed on Ray actors (each loads its segments'
files from the bundle directory: the same machine or a shared file system), every query
goes to all of them at once, and the driver merges their top k with the tombstones
exactly as a single process does (cbir.index.segmented). Slide records, grids and tile
lookups stay in the driver."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.distributed.describe import connect
from cbir.errors import BundleError
from cbir.index.segmented import (
    Part,
    SegmentedIndex,
    complete_batch,
    complete_single,
    first_extra,
    stacked_ivf,
)
from cbir.recipes import IndexConfig
from cbir.storage.bundle import Bundle
from cbir.storage.manifest import INDEX_FILE


def stack_name(names: Sequence[str]) -> str:
    """The name a shard answers to for several segments searched as one."""
    return "+".join(names)


class SegmentShard:
    """A Ray actor's state: the tile indexes of some segments, by segment name; segments
    that are all binary IVF (one collection quantizer) are one index (`stacked_ivf`)
    named `stack_name(names)`, so a query costs one call to the actor, not one a segment."""

    def __init__(self, files: dict[str, str], kind: str, cfg: IndexConfig, nprobe: int) -> None:
        from cbir.index.tile import load_tile_index

        self.indexes: dict[str, Any] = {}
        for name, path in files.items():
            index = load_tile_index(Path(path), kind, cfg, mmap=True)
            index.set_nprobe(nprobe)
            self.indexes[name] = index
        if len(files) > 1:
            stacked = stacked_ivf([Part(index) for index in self.indexes.values()])
            if len(stacked) == 1:  # all binary IVF (else each segment stays itself)
                self.indexes = {stack_name(list(files)): stacked[0].index}

    def ntotal(self) -> dict[str, int]:
        return {name: index.ntotal for name, index in self.indexes.items()}

    def search(self, name: str, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.indexes[name].search(xq, k)

    def search_tie_ordered(
        self, name: str, xq: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.indexes[name].search_tie_ordered(xq, k)


class RemoteIndex:
    """One segment's index on a shard actor: the RowIndex interface, blocking, plus
    `submit` (an ObjectRef) for fan-out."""

    def __init__(self, ray: Any, actor: Any, name: str, ntotal: int) -> None:
        self.ray, self.actor, self.name, self._ntotal = ray, actor, name, ntotal

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def submit(self, method: str, xq: np.ndarray, k: int) -> Any:
        return getattr(self.actor, method).remote(self.name, np.ascontiguousarray(xq), k)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ray.get(self.submit("search", xq, k))

    def search_tie_ordered(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ray.get(self.submit("search_tie_ordered", xq, k))

    def set_nprobe(self, nprobe: int) -> None:
        raise NotImplementedError("nprobe of a sharded bundle is set when it is opened")


def shard_on_ray(bundle: Bundle, address: str, actors: int | None = None) -> list[Any]:
    """Place the bundle's segment indexes on `actors` Ray actors (default: one per
    segment, at most one per cluster CPU) and search through them. Returns the actors
    (they live as long as the bundle's index refers to them)."""
    ray = connect(address)
    segments = [s for s in bundle.segments if s.index.ntotal]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = max(1, min(len(segments), actors or cpus))
    groups: list[list[Any]] = [segments[i::n] for i in range(n)]
    man = bundle.manifest
    nprobe = bundle.index.nprobe
    shard = ray.remote(num_cpus=0)(SegmentShard)
    handles: list[Any] = []
    parts = []
    try:
        for group in groups:
            files = {s.entry.name: str(s.path / INDEX_FILE) for s in group}
            actor = shard.remote(files, man.index_kind, man.recipe.index, nprobe)
            handles.append(actor)
            counts = ray.get(actor.ntotal.remote())
            stacked = len(group) > 1 and stack_name([s.entry.name for s in group]) in counts
            # a stacked shard is one part: its segments' tombstones together (ids are
            # unique across segments: slide id << 32 + row)
            for members in [group] if stacked else [[s] for s in group]:
                name = stack_name([s.entry.name for s in members])
                if counts.get(name) != sum(s.index.ntotal for s in members):
                    raise BundleError(
                        f"{bundle.root}: the shard of {name} holds other rows "
                        "(the bundle changed while it was placed); open it again"
                    )
                remote = RemoteIndex(ray, actor, name, counts[name])
                dead = frozenset().union(*(s.dead for s in members))
                parts.append(Part(remote, dead, sum(s.entry.dead_tiles for s in members)))
    except BaseException as exc:
        for actor in handles:
            ray.kill(actor)
        if isinstance(exc, ray.exceptions.RayError):
            raise BundleError(
                f"{bundle.root}: could not place its segments on Ray ({exc})"
            ) from None
        raise
    bundle.index = FanOutIndex(ray, parts, bundle.index)
    return handles


class FanOutIndex(SegmentedIndex):
    """SegmentedIndex whose parts are remote: every part's search is submitted before
    any is awaited, so the shards search in parallel."""

    def __init__(self, ray: Any, parts: Sequence[Part], like: SegmentedIndex) -> None:
        super().__init__(parts, like.kind, like.nprobe, like.nlist, like.dim)
        self.ray = ray

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        refs = [
            p.index.submit("search", xq, min(k + first_extra(p, k), p.index.ntotal))  # type: ignore[attr-defined]
            for p in self.parts
        ]
        outs = [  # a part short of live rows is asked again, alone
            (p, *complete_batch(p, xq, k, lambda x, kk, _rows, i=p.index: i.search(x, kk), first))
            for p, first in zip(self.parts, self.ray.get(refs), strict=True)
        ]
        return self.merge_batches(outs, k, len(xq))

    def search_tie_ordered(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        refs = [
            p.index.submit("search_tie_ordered", xq, k + first_extra(p, k))  # type: ignore[attr-defined]
            for p in self.parts
        ]
        outs = [
            (
                p,
                *complete_single(
                    p, xq, k, lambda x, kk, _rows, i=p.index: i.search_tie_ordered(x, kk), first
                ),
            )
            for p, first in zip(self.parts, self.ray.get(refs), strict=True)
        ]
        return self.merge_single(outs, k)
