"""What a write transaction stages: the collection state (fitted at build, reused by
every later segment) and new segments; `publish` writes them, renames them into place
and replaces the manifest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir import __version__
from cbir.checksum import sha256_file
from cbir.errors import BundleError
from cbir.local_index import LocalIndex, load_local_index
from cbir.manifest import (
    EMPTY_INDEX_FILE,
    EMPTY_LOCAL_INDEX_FILE,
    FORMAT_VERSION,
    LOCAL_STATE_FILE,
    LOCAL_WEIGHTS_FILE,
    MANIFEST,
    META_DIR,
    SCALE_FILE,
    STATE_FILE,
    UNPUBLISHED,
    WEIGHTS_FILE,
    Counts,
    LocalManifest,
    Manifest,
    SegmentEntry,
    now,
    read_manifest,
    state_name,
)
from cbir.metadata import MetadataStore
from cbir.precision import network_precision
from cbir.tile_index import TileIndex, load_tile_index

if TYPE_CHECKING:
    from cbir.bundle import Bundle
    from cbir.delf.stage import LocalStage
    from cbir.pipeline import TilePipeline
    from cbir.recipes import Recipe
    from cbir.writer import BundleWriter


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

    @classmethod
    def of(cls, bundle: Bundle) -> CollectionState:
        """The live state of an opened bundle (format 2: to be written anew)."""
        man = bundle.manifest
        empty_local = None
        if man.format_version == 2:
            first = bundle.segments[0]
            empty = first.index.emptied()
            if first.local_index is not None:
                empty_local = first.local_index.emptied()
            return cls(bundle.pipeline, empty, bundle.scale_weights, bundle.local, empty_local)
        path = bundle.state / EMPTY_INDEX_FILE
        try:
            empty = load_tile_index(path, man.index_kind, man.recipe.index)
        except RuntimeError as exc:  # Faiss: not an index of this kind, truncated
            raise BundleError(
                f"{bundle.root}: {path.parent.name}/{path.name} is damaged (not a Faiss index: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from None
        if bundle.local is not None:
            assert man.recipe.local is not None
            empty_local = load_local_index(bundle.state / EMPTY_LOCAL_INDEX_FILE, man.recipe.local)
        return cls(
            bundle.pipeline, empty, bundle.scale_weights, bundle.local, empty_local, man.state, man
        )

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

    def finish(self, state: CollectionState) -> SegmentEntry:
        """Write every product's files, close the LMDB; the segment's manifest entry."""
        from cbir.artifacts import artifacts_for

        assert self.meta is not None
        slides = len(self.meta.slide_list())
        products = {a.name: a.finish(self, state) for a in artifacts_for(state)}
        self.meta.env.sync(True)
        self.meta.close()
        self.meta = None
        (self.path / META_DIR / "lock.mdb").unlink(missing_ok=True)
        files = [f"{META_DIR}/data.mdb"] + [f for e in products.values() for f in e.files]
        sizes = {f: (self.path / f).stat().st_size for f in files}
        return SegmentEntry(
            name=self.name,
            slides=slides,
            bytes=sum(sizes.values()),
            sha256={f: sha256_file(self.path / f) for f in files},
            sizes=sizes,
            artifacts=products,
        )

    def discard(self) -> None:
        if self.meta is not None:
            self.meta.close()
            self.meta = None
        shutil.rmtree(self.path, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tombstoned(writer: BundleWriter) -> list[SegmentEntry]:
    """The live segments' entries with this transaction's tombstones added."""
    from cbir.artifacts import REGISTRY

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


def _ordered(writer: BundleWriter, state: CollectionState) -> list[SegmentEntry]:
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
            out.append(merged.finish(state))
            placed.add(merged.name)
    out += [s.finish(state) for n, s in staged.items() if n not in placed]
    return out


def publish(writer: BundleWriter, recipe: Recipe) -> Manifest:
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
