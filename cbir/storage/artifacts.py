"""Per-tile products of a segment as registered artifacts: tile codes (grids + Faiss
index), rerank vectors (LMDB) and rows (a mapped file), local features (keypoints +
their Faiss index), scale references. Each declares when a bundle carries it, how a
new slide's rows are stored, how live rows are copied when segments merge, which files
it finishes into, how it is opened and how many of its rows a removed slide takes.
Writers, merges and readers loop over the registry; none branches on which products a
recipe has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cbir.errors import BundleError
from cbir.files import sha256_file
from cbir.index.tile import load_tile_index
from cbir.slides.grids import CodeGrid
from cbir.storage.local_rows import store_locals
from cbir.storage.manifest import (
    INDEX_FILE,
    LOCAL_INDEX_FILE,
    META_DIR,
    ArtifactEntry,
    Manifest,
    SegmentEntry,
)

if TYPE_CHECKING:
    from cbir.describe import DescribedSlide
    from cbir.recipes import Recipe
    from cbir.storage.metadata import MetadataStore
    from cbir.storage.state import CollectionState, SegmentStage


@dataclass
class MergedRows:
    """The live rows of one opened segment that a merge copies: the new segment's write
    transaction `txn`, the opened `source` segment, its live slides `live` and their
    (n,) tile ids `tile_ids`."""

    txn: Any
    source: Any
    tile_ids: np.ndarray
    live: set[int]


@dataclass
class SlideRows:
    """One new slide being stored: its id, description, grids and (n, ...) codes with
    (n,) tile ids, in the segment's write transaction `txn`."""

    txn: Any
    slide_id: int
    described: DescribedSlide
    grids: list[CodeGrid]
    codes: np.ndarray
    ids: np.ndarray


class Artifact:
    """A per-tile product. `shift`: row id >> shift is its slide id, for products with a
    searchable index (None: read through the segment's LMDB only)."""

    name: ClassVar[str]
    shift: ClassVar[int | None] = None

    def present(self, state: CollectionState) -> bool:
        return True

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        """Stage a new slide's rows."""

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        """Stage the rows of the live slides `rows.live` (tiles `rows.tile_ids`) of the
        opened segment `rows.source` (a merge)."""

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        """Write the staged rows' files; the manifest entry."""
        return ArtifactEntry(rows=0)

    def open(self, path: Path, entry: ArtifactEntry, manifest: Manifest) -> object | None:
        """The product's reader for an opened segment (an index), None if read via LMDB."""
        return None

    def rows_of(self, store: MetadataStore, tile_ids: np.ndarray) -> int:
        """Rows the given tiles hold (what removing them takes from this product)."""
        return len(tile_ids)


REGISTRY: dict[str, Artifact] = {}


def register(cls: type[Artifact]) -> type[Artifact]:
    REGISTRY[cls.name] = cls()
    return cls


def artifacts_for(state: CollectionState) -> list[Artifact]:
    """The registered products a bundle with this state carries, in registry order."""
    return [a for a in REGISTRY.values() if a.present(state)]


def get_artifact(root: Path, name: str) -> Artifact:
    if name not in REGISTRY:
        raise BundleError(f"{root}: segment product {name!r} is unknown to this cbir (newer?)")
    return REGISTRY[name]


def finish_segment(seg: SegmentStage, state: CollectionState) -> SegmentEntry:
    """Write every product's files of a staged segment, close its LMDB; the segment's
    manifest entry."""
    assert seg.meta is not None
    slides = len(seg.meta.slide_list())
    products = {a.name: a.finish(seg, state) for a in artifacts_for(state)}
    seg.meta.env.sync(True)
    seg.meta.close()
    seg.meta = None
    (seg.path / META_DIR / "lock.mdb").unlink(missing_ok=True)
    files = [f"{META_DIR}/data.mdb"] + [f for e in products.values() for f in e.files]
    sizes = {f: (seg.path / f).stat().st_size for f in files}
    return SegmentEntry(
        name=seg.name,
        slides=slides,
        bytes=sum(sizes.values()),
        sha256={f: sha256_file(seg.path / f) for f in files},
        sizes=sizes,
        artifacts=products,
    )


def _staged_index(
    seg: SegmentStage, name: str, empty: Any, check: Callable[[int], int], file: str
) -> ArtifactEntry:
    """Fill a copy of an empty index with the rows staged under `name`, check its count
    against the LMDB's, save it as `file`."""
    index = empty.emptied()
    for x, ids in seg.staged_rows(name):
        index.add(x, ids)
    expected = check(index.ntotal)
    if index.ntotal != expected:
        raise BundleError(
            f"{seg.path.parent}: refusing to publish an inconsistent segment ({name}: "
            f"index {index.ntotal} rows, LMDB {expected})"
        )
    index.save(seg.path / file)
    return ArtifactEntry(rows=index.ntotal, files=[file])


@register
class TileCodes(Artifact):
    """The code grids (LMDB) and the Faiss index of the tile codes; ids (slide << 32) + n."""

    name = "codes"
    shift = 32

    @staticmethod
    def recipe_spec(recipe: Recipe) -> dict[str, Any]:
        """What shapes a recipe's codes: its descriptor and encoder settings, without the
        encoder's promises (parameters only checked against the weights)."""
        from cbir.encoders import ENCODERS

        promises = getattr(ENCODERS.factory(recipe.encoder.name), "promises", ())
        params = {k: v for k, v in recipe.encoder.params.items() if k not in promises}
        return {
            "descriptor": recipe.descriptor.model_dump(mode="json"),
            "encoder": {"name": recipe.encoder.name, "params": params},
        }

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        seg.stage_rows(self.name, rows.codes, rows.ids)  # the grids come with the slide

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        decode = state.pipeline.codes_from_bytes
        for sid in sorted(rows.live):
            grids = list(rows.source.store.grids_of(sid))
            ids = np.concatenate([g.ids[g.valid] for g in grids]).astype(np.int64)
            raw = np.concatenate([g.codes[g.valid] for g in grids])
            seg.stage_rows(self.name, decode(raw), ids)

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        assert seg.meta is not None
        entry = _staged_index(
            seg, self.name, state.empty_index, lambda n: seg.meta.tile_count(), INDEX_FILE
        )
        return entry.model_copy(update={"spec": self.recipe_spec(state.pipeline.recipe)})

    def open(self, path: Path, entry: ArtifactEntry, manifest: Manifest) -> object:
        return load_tile_index(
            path / INDEX_FILE, manifest.index_kind, manifest.recipe.index, mmap=True
        )


@register
class RerankVectors(Artifact):
    """The descriptors a binary recipe's two-step search reorders its Hamming candidates
    by (float32), by tile id in LMDB. (Float bundles written before `RerankRows` carry
    their float16 copies here too; a merge moves them into `RerankRows`.)"""

    name = "vectors"

    def present(self, state: CollectionState) -> bool:
        return bool(state.pipeline.recipe.search.rerank and state.pipeline.binary)

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        assert seg.meta is not None
        x = np.concatenate([sc.descriptors for sc in rows.described.scales])
        seg.meta.put_vectors(rows.txn, rows.ids, x)

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        assert seg.meta is not None
        seg.meta.copy_values(rows.txn, rows.source.store, "vectors", rows.tile_ids)

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        assert seg.meta is not None
        return ArtifactEntry(rows=seg.meta.value_count("vectors"))


@register
class RerankRows(Artifact):
    """Float16 copies of the vectors of a float recipe whose index is compressed
    (IVF-PQ): one memory-mapped file a segment (cbir.storage.vector_rows) that a query's
    few hundred candidates are read from at once, then reordered by exact squared L2.
    Written from the staged tile codes, so a new slide and a merge store nothing else."""

    name = "rows"

    def present(self, state: CollectionState) -> bool:
        from cbir.index.float import is_ivf

        recipe = state.pipeline.recipe
        compressed = not state.pipeline.binary and is_ivf(recipe.index.float_factory)
        return bool(recipe.search.rerank and compressed)

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        from cbir.storage.vector_rows import ROWS_FILE, RUNS_FILE, write_rows

        assert seg.meta is not None
        dim = state.pipeline.encoder.spec.dim
        blocks = ((x.astype(np.float16), ids) for x, ids in seg.staged_rows("codes"))
        rows, expected = write_rows(seg.path, blocks, dim), seg.meta.tile_count()
        if rows != expected:
            raise BundleError(
                f"{seg.path.parent}: refusing to publish an inconsistent segment ({self.name}: "
                f"{rows} rows, LMDB {expected})"
            )
        return ArtifactEntry(rows=rows, files=[ROWS_FILE, RUNS_FILE], spec={"dim": dim})

    def open(self, path: Path, entry: ArtifactEntry, manifest: Manifest) -> object:
        from cbir.storage.vector_rows import VectorRows

        return VectorRows(path, int(entry.spec["dim"]))


@register
class LocalFeatures(Artifact):
    """DELF keypoints (LMDB by tile id) and the Faiss index of their descriptors (the
    descriptors' only copy since compact local features), row ids (tile id << 10) | row."""

    name = "locals"
    shift = 42

    def present(self, state: CollectionState) -> bool:
        return state.local is not None

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        from cbir.index.local import LocalCodeIndex

        assert state.local is not None
        codec = state.empty_local if isinstance(state.empty_local, LocalCodeIndex) else None
        for sc, grid in zip(rows.described.scales, rows.grids, strict=True):
            store_locals(rows.txn, seg, state.local, sc, grid.ids[sc.keep], codec)

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        assert seg.meta is not None
        seg.meta.copy_values(rows.txn, rows.source.store, "locals", rows.tile_ids)
        index = rows.source.readers.get(self.name)
        if index is not None:
            x, ids = index.rows()
            keep = np.isin(ids >> self.shift, np.fromiter(rows.live, np.int64, len(rows.live)))
            seg.stage_rows(self.name, x[keep], ids[keep])

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        assert seg.meta is not None and state.empty_local is not None
        count = seg.meta.local_feature_count
        return _staged_index(seg, self.name, state.empty_local, lambda n: count(), LOCAL_INDEX_FILE)

    def open(self, path: Path, entry: ArtifactEntry, manifest: Manifest) -> object:
        from cbir.index.local import load_local_index

        cfg = manifest.recipe.local
        assert cfg is not None
        return load_local_index(path / LOCAL_INDEX_FILE, cfg)

    def rows_of(self, store: MetadataStore, tile_ids: np.ndarray) -> int:
        return int(store.local_counts(tile_ids).sum())


@register
class ScaleReferences(Artifact):
    """Sample tissue tiles per magnification for the scale comparator (the first ones kept)."""

    name = "references"

    def present(self, state: CollectionState) -> bool:
        return state.scale_weights is not None

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        from cbir.describe import REFERENCES_PER_MAGNIFICATION

        assert seg.meta is not None
        for mag, tiles in rows.described.references.items():
            seg.meta.add_reference_tiles(rows.txn, mag, tiles, REFERENCES_PER_MAGNIFICATION)

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        from cbir.describe import REFERENCES_PER_MAGNIFICATION

        assert seg.meta is not None
        for mag, tiles in rows.source.store.reference_tiles().items():
            seg.meta.add_reference_tiles(rows.txn, mag, tiles, REFERENCES_PER_MAGNIFICATION)

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        assert seg.meta is not None
        return ArtifactEntry(rows=sum(len(t) for t in seg.meta.reference_tiles().values()))

    def rows_of(self, store: MetadataStore, tile_ids: np.ndarray) -> int:
        return 0  # references are not tiles of a slide: they stay until a merge drops them


@register
class SlideMosaics(Artifact):
    """Each slide's mosaic tile ids and mean-pooled code vector (cbir.storage.mosaics),
    by slide id in LMDB: what a slide query searches with and ranks slides by first."""

    name = "mosaics"

    def store(self, seg: SegmentStage, state: CollectionState, rows: SlideRows) -> None:
        from cbir.slides.mosaic import mosaic_magnification
        from cbir.storage.mosaics import mosaic_from_grid, put_mosaic

        assert seg.meta is not None
        chosen = rows.described.mosaic
        mags = [g.geometry.magnification for g in rows.grids if g.valid.any()]
        if not mags:
            return
        mag = chosen.magnification if chosen is not None else mosaic_magnification(mags)
        grid = next(g for g in rows.grids if g.geometry.magnification == mag)
        pipe = state.pipeline
        stored = mosaic_from_grid(grid, pipe.codes_from_bytes, pipe.binary, chosen)
        put_mosaic(seg.meta, rows.txn, rows.slide_id, stored)

    def copy(self, seg: SegmentStage, state: CollectionState, rows: MergedRows) -> None:
        from cbir.storage.mosaics import copy_mosaics

        assert seg.meta is not None
        copy_mosaics(seg.meta, rows.txn, rows.source.store, rows.live)

    def finish(self, seg: SegmentStage, state: CollectionState) -> ArtifactEntry:
        assert seg.meta is not None
        return ArtifactEntry(rows=seg.meta.value_count("mosaics"))

    def rows_of(self, store: MetadataStore, tile_ids: np.ndarray) -> int:
        return len(set((np.asarray(tile_ids, np.int64) >> 32).tolist()) & _mosaic_slides(store))


def _mosaic_slides(store: MetadataStore) -> set[int]:
    """Ids of the slides with a stored mosaic."""
    from cbir.storage.mosaics import read_mosaic

    return {r.slide_id for r in store.slide_list() if read_mosaic(store, r.slide_id) is not None}
