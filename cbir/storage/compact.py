"""Merging segments: their live slides copied into one new segment (tombstones dropped,
tile ids kept), by `cbir compact`, by `add` when a bundle has too many segments, and
when a collection grows past the IVF threshold (then with a newly trained quantizer) or
its local features become enough to train the recipe's PQ (exact codes until then)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.index.local import LocalCodeIndex, local_index_template, outgrown
from cbir.storage.bundle import Segment
from cbir.storage.state import CollectionState, SegmentStage
from cbir.storage.store import empty_index_for
from cbir.storage.writer import BundleWriter, transaction


class CompactReport(BaseModel):
    bundle: str
    segments_before: int
    segments_after: int
    tiles: int
    tombstoned_tiles_dropped: int
    index_kind: str
    bytes_written: int
    seconds: float


def merge_into(writer: BundleWriter, segments: list[Segment]) -> SegmentStage | None:
    """Stage one segment holding the live slides of `segments` (oldest first: their
    reference tiles keep their order) with every product the bundle carries, and take
    those segments out of the bundle; None (nothing staged) when no slide is live."""
    from cbir.storage.artifacts import MergedRows, artifacts_for

    state = writer.state
    assert state is not None
    writer.drop({s.entry.name for s in segments})
    lives = [
        {r.slide_id for r in s.store.slide_list()} - (s.dead | writer.dead.get(s.entry.name, set()))
        for s in segments
    ]
    if not any(lives):
        return None
    seg = writer.new_segment()
    seg.sources = tuple(s.entry.name for s in segments)
    assert seg.meta is not None
    products = artifacts_for(state)
    with seg.meta.env.begin(write=True) as txn:
        for s, live in zip(segments, lives, strict=True):
            records = [r for r in s.store.slide_list() if r.slide_id in live]
            for r in records:
                grids = list(s.store.grids_of(r.slide_id))
                seg.meta.put_slide(txn, r.model_copy(update={"labels": {}}), grids)
            ids = [s.store.tile_ids_of(r.slide_id) for r in records]
            tile_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            rows = MergedRows(txn, s, tile_ids, live)
            for product in products:
                product.copy(seg, state, rows)
    return seg


def _live(s: Segment) -> int:
    return s.entry.live_tiles


def needs_ivf(writer: BundleWriter, extra: int = 0) -> bool:
    """Whether an exact index has grown past the recipe's IVF threshold."""
    assert writer.state is not None and writer.previous is not None
    cfg = writer.previous.recipe.index
    live = sum(_live(s) for s in writer.live_segments()) + extra
    return writer.state.empty_index.outgrown(cfg, live)


def needs_local_retrain(writer: BundleWriter) -> bool:
    """Whether a local index given exact codes for want of rows can now train the
    recipe's PQ on the live (this transaction's tombstones left out) and newly staged
    local features."""
    state, cfg = writer.state, writer.previous.recipe.local if writer.previous else None
    if state is None or cfg is None:
        return False
    live = sum(
        s.entry.rows("locals") - s.entry.dead_rows.get("locals", 0) - _dead_now(writer, s, "locals")
        for s in writer.live_segments()
    )
    staged = sum(len(ids) for s in writer.segments for _, ids in s.staged_rows("locals"))
    return outgrown(state.empty_local, cfg, live + staged)


def retrain_index(writer: BundleWriter, tiles: bool = True, local: bool = False) -> None:
    """A new collection state whose empty indexes are trained anew on every live row:
    the tile index (flat -> IVF) and/or the local index (exact -> PQ codes, its staged
    codes decoded to be coded again); every live segment is merged into one so that
    all share it."""
    state = writer.state
    assert state is not None and writer.previous is not None
    merge_into(writer, writer.live_segments())
    staged = [s for s in writer.segments if s.staged]
    if not staged:  # nothing left to train on: keep the indexes
        return
    empty_index, empty_local = state.empty_index, state.empty_local
    if tiles:
        xt = np.concatenate([s.rows("codes")[0] for s in staged])
        empty_index = empty_index_for(state.pipeline, writer.previous.recipe, xt)
    if local and isinstance(empty_local, LocalCodeIndex):
        old = empty_local
        for s in staged:
            s.map_rows("locals", lambda x: old.decode(x) if x.dtype == np.uint8 else x)
        assert writer.previous.recipe.local is not None
        blocks = [s.rows("locals")[0] for s in staged if s.staged_rows("locals")]
        if blocks:  # no local feature left: keep the exact codes
            empty_local = local_index_template(writer.previous.recipe.local, np.concatenate(blocks))
    writer.state = CollectionState(
        state.pipeline, empty_index, state.scale_weights, state.local, empty_local
    )


def auto_compact(writer: BundleWriter) -> list[str]:
    """After an add or remove: merge segments mostly removed, then the smallest ones
    while the bundle would hold more than the recipe's `max_segments`; retrain the index
    when it has grown past the IVF threshold. Returns the merged segments' names."""
    assert writer.previous is not None
    cfg = writer.previous.recipe.index
    new_tiles = sum(s.staged_tiles for s in writer.segments)
    # Segments Ray workers wrote are finished on the old index: the retraining they
    # would call for waits for the next add or `cbir compact`.
    local_only = all(isinstance(s, SegmentStage) for s in writer.segments)
    tiles, local = needs_ivf(writer, new_tiles), needs_local_retrain(writer)
    if local_only and (tiles or local):
        names = [s.entry.name for s in writer.live_segments()]
        retrain_index(writer, tiles, local)
        return names
    live = writer.live_segments()
    total = len(live) + len(writer.segments)
    pick = {
        s.entry.name
        for s in live
        if (dead := s.entry.dead_tiles + _dead_now(writer, s))
        > cfg.max_dead_fraction * s.entry.tiles
        or dead >= s.entry.tiles
    }
    by_size = sorted(live, key=lambda s: (_live(s), s.entry.name))
    extra = total - cfg.max_segments
    if extra > 0:
        pick |= {s.entry.name for s in by_size[: extra + 1]}
    chosen = [s for s in live if s.entry.name in pick]
    if len(chosen) == 1 and not (chosen[0].dead or writer.dead.get(chosen[0].entry.name)):
        return []
    if chosen:
        merge_into(writer, chosen)
    return [s.entry.name for s in chosen]


def _dead_now(writer: BundleWriter, s: Segment, product: str = "codes") -> int:
    """Rows of `product` (tiles, for codes) in `s` tombstoned by this transaction."""
    from cbir.storage.artifacts import REGISTRY

    fresh = writer.dead.get(s.entry.name, set()) - s.dead
    rows_of = REGISTRY[product].rows_of
    return sum(rows_of(s.store, s.store.tile_ids_of(sid)) for sid in fresh)


def compact(bundle: str | os.PathLike[str]) -> CompactReport:
    """Merge every segment of a bundle into one, dropping tombstoned tiles; a bundle
    grown past the IVF threshold gets a trained IVF index. Atomic."""
    start = time.perf_counter()
    with transaction(bundle, create=False) as writer:
        live = writer.live_segments()
        dead = sum(s.entry.dead_tiles for s in live)
        tiles, local = needs_ivf(writer), needs_local_retrain(writer)
        if tiles or local:
            retrain_index(writer, tiles, local)
        elif len(live) > 1 or dead:
            merge_into(writer, live)
        else:  # one segment without tombstones: nothing to merge, nothing written
            assert writer.previous is not None
            return CompactReport(
                bundle=str(bundle),
                segments_before=len(live),
                segments_after=len(live),
                tiles=writer.previous.counts.tiles,
                tombstoned_tiles_dropped=0,
                index_kind=writer.previous.index_kind,
                bytes_written=0,
                seconds=round(time.perf_counter() - start, 4),
            )
        manifest = writer.commit(writer.previous.recipe)  # type: ignore[union-attr]
    root = Path(bundle)
    written = sum(
        p.stat().st_size
        for s in manifest.segments
        for p in (root / s.name).rglob("*")
        if p.is_file()
    )
    return CompactReport(
        bundle=str(bundle),
        segments_before=len(live),
        segments_after=len(manifest.segments),
        tiles=manifest.counts.tiles,
        tombstoned_tiles_dropped=dead,
        index_kind=manifest.index_kind,
        bytes_written=written,
        seconds=round(time.perf_counter() - start, 4),
    )
