"""Publishing a write transaction: the staged state and segments are written, renamed
into place, then the manifest is replaced (the atomic step). Before that replace, a
failure removes what it moved; after it, nothing may undo it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cbir import __version__
from cbir.errors import BundleError
from cbir.storage.artifacts import REGISTRY, finish_segment
from cbir.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    UNPUBLISHED,
    Counts,
    LocalManifest,
    Manifest,
    SegmentEntry,
    now,
    read_manifest,
)
from cbir.storage.state import CollectionState, SegmentStage

if TYPE_CHECKING:
    from cbir.recipes import Recipe


class Transaction(Protocol):
    """What `publish` reads of a write transaction (writer.BundleWriter)."""

    root: Path
    previous: Manifest | None
    live: Any  # the opened live bundle (storage.bundle.Bundle), None on a first build
    state: CollectionState | None
    segments: list[Any]  # SegmentStage, or segments written elsewhere (Ray workers)
    dead: dict[str, set[int]]
    generation: int
    next_slide_id: int
    labels: Any
    committed: bool

    def live_segments(self) -> list[Any]: ...


def _fsync_tree(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tombstoned(writer: Transaction) -> list[SegmentEntry]:
    """The live segments' entries with this transaction's tombstones added."""

    out = []
    for seg in writer.live_segments():
        entry = seg.entry
        dead = writer.dead.get(entry.name, set()) - set(entry.dead_slides)
        if dead:
            tile_ids = np.concatenate([seg.store.tile_ids_of(s) for s in sorted(dead)])
            rows = dict(entry.dead_rows)
            for name in entry.artifacts:
                taken = REGISTRY[name].rows_of(seg.store, tile_ids)
                if taken:
                    rows[name] = rows.get(name, 0) + taken
            entry = entry.model_copy(
                update={"dead_slides": sorted(set(entry.dead_slides) | dead), "dead_rows": rows}
            )
        out.append(entry)
    return out


def _published(root: Path, manifest: Manifest) -> bool:
    """Whether the manifest on disk is `manifest` (its generation and segments)."""
    try:
        live = read_manifest(root)
    except BundleError:
        return False
    return live.generation == manifest.generation and live.segments == manifest.segments


def _finished(seg: Any, state: CollectionState) -> SegmentEntry:
    """The entry of a staged segment: its files finished here (a SegmentStage), or as
    its writer finished them (a Ray worker's distributed.segments.WrittenSegment)."""
    if isinstance(seg, SegmentStage):
        return finish_segment(seg, state)
    return seg.finish(state)


def _ordered(writer: Transaction, state: CollectionState) -> list[SegmentEntry]:
    """Live and staged segments' entries, oldest first: a merged segment takes the place
    of its oldest source (scale references are read oldest first), new ones go last."""
    live = {e.name: e for e in _tombstoned(writer)}
    staged = {s.name: s for s in writer.segments}
    out, placed = [], set()
    for seg in writer.live.segments if writer.live else []:
        name = seg.entry.name
        if name in live:
            out.append(live[name])
            continue
        merged = next((s for s in writer.segments if name in getattr(s, "sources", ())), None)
        if merged is not None and merged.name not in placed:
            out.append(_finished(merged, state))
            placed.add(merged.name)
    out += [_finished(s, state) for n, s in staged.items() if n not in placed]
    return out


def publish(writer: Transaction, recipe: Recipe) -> Manifest:
    """Write the staged state and segments, rename them into place, then replace the
    manifest (the atomic publish). Before the replace, a failure removes what it moved."""
    state = writer.state
    assert state is not None
    root, previous = writer.root, writer.previous
    if state.new:
        fields = state.write(root, writer.generation)
    else:
        assert state.manifest is not None
        keep = (
            "state",
            "pipeline_sha256",
            "weights_sha256",
            "scale_weights_sha256",
            "local",
            "precision",
            "state_sha256",
        )
        fields = {k: getattr(state.manifest, k) for k in keep}
    entries = _ordered(writer, state)
    local = fields["local"]
    if isinstance(local, LocalManifest):
        live_rows = sum(e.rows("locals") - e.dead_rows.get("locals", 0) for e in entries)
        fields["local"] = local.model_copy(update={"features": live_rows})
    pipeline = state.pipeline
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        cbir_version=__version__,
        recipe=recipe,
        descriptor=pipeline.descriptor_spec,
        encoder=pipeline.encoder_spec,
        index_kind=state.empty_index.kind,
        nlist=state.empty_index.nlist,
        generation=writer.generation,
        counts=Counts(
            slides=sum(e.slides - len(e.dead_slides) for e in entries),
            tiles=sum(e.live_tiles for e in entries),
        ),
        segments=entries,
        next_slide_id=writer.next_slide_id,
        labels=writer.labels,
        created=previous.created if previous and writer.live is not None else now(),
        updated=now(),
        **fields,  # type: ignore[arg-type]
    )
    moves = [(s.path, root / s.name) for s in writer.segments]
    if state.new:
        assert state.stage is not None
        moves.append((state.stage, root / str(fields["state"])))
    moved: list[Path] = []
    tmp_manifest = root / f".{MANIFEST}.tmp"
    try:
        for src, dst in moves:
            (src / UNPUBLISHED).touch()  # removed once the manifest naming it is live
            _fsync_tree(src)
            if dst.exists():
                shutil.rmtree(dst)
            os.rename(src, dst)
            moved.append(dst)
        tmp_manifest.write_text(manifest.model_dump_json(indent=2))
        with open(tmp_manifest, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_manifest, root / MANIFEST)  # the atomic publish
    except BaseException:
        if _published(root, manifest):  # interrupted just after the replace (Ctrl-C)
            writer.committed = True
            raise
        tmp_manifest.unlink(missing_ok=True)
        for p in moved:
            shutil.rmtree(p, ignore_errors=True)
        raise
    writer.committed = True  # published: nothing below may undo it
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return manifest
