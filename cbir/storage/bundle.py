"""Opening a bundle for reading: its manifest, collection state and segments (format 3,
see cbir.storage.manifest), or the one generation of a format-2 bundle (read-only). Writing is
cbir.storage.writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb

from cbir.errors import BundleError, BundleMismatchError, CbirError
from cbir.index.local import LocalIndex
from cbir.index.segmented import Part, SegmentedIndex, stacked_ivf
from cbir.index.tile import TileIndex
from cbir.nn.precision import network_precision, warn_if_different
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe
from cbir.storage.artifacts import get_artifact
from cbir.storage.file_checks import check_sizes, check_sums, sha256_matches
from cbir.storage.lmdb_file import address_limit_note
from cbir.storage.manifest import (
    EMPTY_INDEX_FILE,
    INDEX_FILE,
    LOCAL_INDEX_FILE,
    LOCAL_STATE_FILE,
    META_DIR,
    OPEN_RETRIES,
    SCALE_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    ArtifactEntry,
    Manifest,
    SegmentEntry,
    gen_dir,
    read_manifest,
)
from cbir.storage.metadata import MetadataStore
from cbir.storage.segment_meta import SegmentedMeta

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage

#: Reference tiles kept per magnification for scale detection (as cbir.describe stores).
REFERENCE_LIMIT = 8


class Segment:
    """One opened segment: its LMDB store and the readers of its products that have one
    (cbir.storage.artifacts: the tile index under "codes", the local index under "locals")."""

    def __init__(
        self, entry: SegmentEntry, path: Path, store: MetadataStore, readers: dict[str, Any]
    ) -> None:
        self.entry = entry
        self.path = path
        self.store = store
        self.readers = readers

    @property
    def index(self) -> TileIndex:
        return self.readers["codes"]

    @property
    def local_index(self) -> LocalIndex | None:
        return self.readers.get("locals")

    @property
    def dead(self) -> frozenset[int]:
        return frozenset(self.entry.dead_slides)


class Bundle:
    """A bundle opened for reading: manifest, fitted pipeline, and its segments searched
    and read as one (`index`, `meta`, `local_index`)."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        state: Path,
        segments: list[Segment],
        pipeline: TilePipeline,
        scale_weights: Path | None = None,
        local: LocalStage | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.state = state  # directory of the collection state files
        self.segments = segments
        self.pipeline = pipeline
        self.scale_weights = scale_weights  # the scale comparator, if the bundle has one
        self.local = local  # local features for --verify, if the bundle has them
        self.shards: list[object] = []  # Ray actors holding the indexes (cbir.distributed.search)
        self._closed = False
        self.index = self._searched(
            "codes",
            manifest.index_kind,
            manifest.recipe.index.nprobe,
            manifest.nlist,
            manifest.encoder.dim if manifest.encoder.kind == "float" else manifest.encoder.bits,
        )
        self.meta = SegmentedMeta(
            [s.store for s in segments],
            [s.dead for s in segments],
            manifest.labels,
            REFERENCE_LIMIT,
            [s.readers.get("locals") for s in segments],
        )
        #: float16 rows a compressed float index's candidates are reordered by
        self.rows = [s.readers["rows"] for s in segments if "rows" in s.readers]
        self.local_index: SegmentedIndex | None = None
        if local is not None and manifest.recipe.local is not None:
            self.local_index = self._searched(
                "locals", "float", 0, None, manifest.recipe.local.pca_dim
            )

    def _searched(
        self, name: str, kind: str, nprobe: int, nlist: int | None, dim: int
    ) -> SegmentedIndex:
        """Product `name`'s index of every segment searched as one, tombstones skipped."""
        shift = get_artifact(self.root, name).shift
        assert shift is not None
        parts = [
            Part(s.readers[name], s.dead, s.entry.dead_rows.get(name, 0), shift)
            for s in self.segments
            if name in s.readers
        ]
        if name == "codes":
            parts = stacked_ivf(parts)
        index = SegmentedIndex(parts, kind, nprobe, nlist, dim)
        if parts and hasattr(parts[0].index, "nprobe"):
            index.nprobe = parts[0].index.nprobe
        return index

    @property
    def recipe(self) -> Recipe:
        return self.manifest.recipe

    @property
    def readonly(self) -> bool:
        return self.manifest.readonly

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], readonly: bool = True, device: str | None = "auto"
    ) -> Bundle:
        root = Path(root)
        for attempt in range(OPEN_RETRIES):
            manifest = read_manifest(root)
            try:
                return cls.open_manifest(root, manifest, device)
            except (BundleError, OSError):
                # A writer may have published and swept the files of this manifest
                # between our reading it and opening them: read it again.
                if (
                    attempt + 1 == OPEN_RETRIES
                    or read_manifest(root).generation == manifest.generation
                ):
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def open_manifest(cls, root: Path, manifest: Manifest, device: str | None = "auto") -> Bundle:
        if manifest.format_version == 2:
            state = gen_dir(root, manifest.generation)
            entries = [_format2_segment(manifest)]
            dirs = [state]
        else:
            state = root / manifest.state
            entries = manifest.segments
            dirs = [root / e.name for e in entries]
        pipeline, scale_weights = _open_state(root, manifest, state, device)
        layout = 2 if manifest.format_version == 2 else 3
        segments: list[Segment] = []
        try:
            local = _open_local_stage(root, manifest, state, device)
            extractor = local.extractor if local else None
            pipeline.when_built(  # a network is built when it is used: warn then
                lambda d: warn_if_different(
                    root, manifest.precision, network_precision(d, extractor)
                )
            )
            for entry, path in zip(entries, dirs, strict=True):
                segments.append(_open_segment(root, manifest, entry, path, layout))
            bundle = cls(root, manifest, state, segments, pipeline, scale_weights, local)
        except BaseException as exc:
            for s in segments:
                s.store.close()
            if isinstance(exc, lmdb.Error):
                raise BundleError(f"{root}: unreadable LMDB store ({exc})") from exc
            raise
        n_meta = bundle.meta.tile_count()
        if not (bundle.index.ntotal == n_meta == manifest.counts.tiles):
            bundle.close()
            raise BundleError(
                f"{root}: inconsistent bundle (Faiss {bundle.index.ntotal} tiles, LMDB "
                f"{n_meta}, manifest {manifest.counts.tiles})"
            )
        return bundle

    def close(self) -> None:
        """Release the segments' stores (shared in this process) and any Ray shards;
        closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self.meta.close()
        self.rows = []  # their maps (and file descriptors) go with the last reference
        for s in self.segments:
            s.readers.pop("rows", None)
        if self.shards:
            import ray

            for actor in self.shards:
                ray.kill(actor)
            self.shards = []

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _format2_segment(manifest: Manifest) -> SegmentEntry:
    """A format-2 generation seen as one segment without tombstones."""
    products = {"codes": ArtifactEntry(rows=manifest.counts.tiles, files=[INDEX_FILE])}
    if manifest.local is not None:
        products["locals"] = ArtifactEntry(rows=manifest.local.features, files=[LOCAL_INDEX_FILE])
    return SegmentEntry(
        name=gen_dir(Path(), manifest.generation).name,
        slides=manifest.counts.slides,
        bytes=0,
        sha256={},
        artifacts=products,
    )


def _checked(root: Path, path: Path, sha: str | None, what: str) -> Path:
    name = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        raise BundleError(f"{root}: {what} missing ({name})")
    if sha is not None and not sha256_matches(path, sha):
        raise BundleError(f"{root}: {name} ({what}) does not match its checksum")
    return path


def _open_state(
    root: Path, manifest: Manifest, state: Path, device: str | None
) -> tuple[TilePipeline, Path | None]:
    """The fitted pipeline and scale comparator of a bundle, checked against the manifest."""
    weights = None
    if manifest.weights_sha256 is not None:
        weights = _checked(root, state / WEIGHTS_FILE, manifest.weights_sha256, "model weights")
    pipeline = TilePipeline(
        manifest.recipe, weights=weights, device=device, stored=manifest.descriptor, where=root
    )
    scale_weights = None
    if manifest.scale_weights_sha256 is not None:
        scale_weights = _checked(
            root, state / SCALE_FILE, manifest.scale_weights_sha256, "scale comparator"
        )
    if pipeline.descriptor_spec != manifest.descriptor or pipeline.encoder_spec != manifest.encoder:
        raise BundleMismatchError(
            f"{root}: component specs of the bundle differ from those its recipe "
            f"{manifest.recipe.name!r} builds in this cbir"
        )
    if not (state / STATE_FILE).is_file():
        raise BundleError(f"{root}: bundle is incomplete ({state.name}/{STATE_FILE} missing)")
    if not sha256_matches(state / STATE_FILE, manifest.pipeline_sha256):
        raise BundleError(f"{root}: {state.name}/{STATE_FILE} does not match its checksum")
    if manifest.format_version > 2 and not (state / EMPTY_INDEX_FILE).is_file():
        raise BundleError(f"{root}: bundle is incomplete ({state.name}/{EMPTY_INDEX_FILE} missing)")
    for name, sha in manifest.state_sha256.items():
        _checked(root, state / name, sha, "collection state")
    try:
        pipeline.load_state(state / STATE_FILE)
    except (CbirError, ValueError, KeyError) as exc:  # a state that does not fit its recipe
        raise BundleError(f"{root}: {state.name}/{STATE_FILE}: {exc}") from None
    return pipeline, scale_weights


def _open_segment(
    root: Path, manifest: Manifest, entry: SegmentEntry, path: Path, layout: int
) -> Segment:
    """Open one segment's LMDB and its products' readers; check files and counts."""
    if not (path / META_DIR).exists():
        raise BundleError(f"{root}: bundle is incomplete ({path.name}/{META_DIR} missing)")
    for product in entry.artifacts.values():
        for name in product.files:
            if not (path / name).is_file():
                raise BundleError(f"{root}: bundle is incomplete ({path.name}/{name} missing)")
    check_sizes(root, entry, path)
    check_sums(root, entry, path)  # before LMDB maps a file that could crash it
    try:
        store = MetadataStore.open_shared(path / META_DIR, layout)
    except Exception as exc:  # lmdb.Error has no common base with OSError
        raise BundleError(
            f"{root}: unreadable LMDB store in {path.name} ({exc}){address_limit_note()}"
        ) from exc
    try:
        unknown = set(entry.dead_slides) - {r.slide_id for r in store.slide_list()}
        if unknown:
            raise BundleError(
                f"{root}: manifest tombstones slide {min(unknown)} in {path.name}, "
                "which has no such slide"
            )
        readers = {}
        for name, product in entry.artifacts.items():
            try:
                reader = get_artifact(root, name).open(path, product, manifest)
            except (RuntimeError, ValueError, OSError, EOFError) as exc:
                note = address_limit_note() if isinstance(exc, OSError) else ""
                raise BundleError(
                    f"{root}: unreadable {name} index in {path.name} ({exc}){note}"
                ) from exc
            if reader is None:
                continue
            if reader.ntotal != product.rows:
                raise BundleError(
                    f"{root}: inconsistent segment {path.name} ({name}: index {reader.ntotal} "
                    f"rows, manifest {product.rows})"
                )
            readers[name] = reader
    except BaseException:
        store.close()
        raise
    return Segment(entry, path, store, readers)


def _open_local_stage(
    root: Path, manifest: Manifest, state: Path, device: str | None
) -> LocalStage | None:
    """A bundle's local-feature extractor with its fitted PCA (None without local
    features), checked against the manifest."""
    if manifest.local is None:
        return None
    from cbir.delf.stage import LocalStage

    lm, cfg = manifest.local, manifest.recipe.local
    if cfg is None:
        raise BundleError(f"{root}: manifest lists local features but its recipe has none")
    weights = None
    if lm.weights_file is not None:
        weights = _checked(root, state / lm.weights_file, lm.weights_sha256, "local weights")
    if not (state / LOCAL_STATE_FILE).is_file():
        raise BundleError(f"{root}: bundle is incomplete ({state.name}/{LOCAL_STATE_FILE} missing)")
    if not sha256_matches(state / LOCAL_STATE_FILE, lm.state_sha256):
        raise BundleError(f"{root}: {state.name}/{LOCAL_STATE_FILE} does not match its checksum")
    stage = LocalStage(cfg, weights, device)
    if stage.spec != lm.spec:
        raise BundleMismatchError(
            f"{root}: local features of the bundle differ from those its recipe builds here"
        )
    stage.load_state(state / LOCAL_STATE_FILE)
    return stage
