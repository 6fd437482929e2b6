"""Index bundles on disk: a manifest naming one complete generation of files.

    idx/manifest.json           Manifest; its `generation` names the live directory
    idx/gen-000007/tiles.fbin   Faiss binary index (tile codes, tile ids)
    idx/gen-000007/meta.lmdb/   LMDB: tiles, slides, paths, grids
    idx/gen-000007/pipeline.npz encoder state (standardisation, hyperplanes)
    idx/gen-000007/weights.pt   model weights of a learned descriptor (checksum in manifest)
    idx/gen-000007/scale.pt     scale comparator weights for `--scale auto` (optional)
    idx/gen-000007/locals.faiss local descriptors of every tile, ids (tile id << 10) | row
    idx/gen-000007/local.npz    the local descriptors' PCA (fitted on the collection)
    idx/gen-000007/local.pt     local extractor weights, when not the same as weights.pt

A change is made in a fresh directory and published by atomically replacing
manifest.json; the old generation is then deleted. A run that dies before the
replace leaves the previous bundle as it was (its leftovers are swept next time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cbir.checksum import sha256_file
from cbir.errors import BundleError, BundleMismatchError
from cbir.float_index import FloatTileIndex
from cbir.metadata import MetadataStore
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe
from cbir.tile_index import TileIndex, load_tile_index

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage
from cbir.manifest import (
    INDEX_FILE,
    LOCAL_INDEX_FILE,
    LOCAL_STATE_FILE,
    META_DIR,
    OPEN_RETRIES,
    SCALE_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    Manifest,
    gen_dir,
    read_manifest,
)


class Bundle:
    """A bundle opened for reading: manifest, Faiss index, LMDB store, fitted pipeline."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        index: TileIndex,
        meta: MetadataStore,
        pipeline: TilePipeline,
        scale_weights: Path | None = None,
        local: LocalStage | None = None,
        local_index: FloatTileIndex | None = None,
    ) -> None:
        self.root = root
        self.local = local  # local features for --verify, if the bundle has them
        self.local_index = local_index
        self.manifest = manifest
        self.index = index
        self.meta = meta
        self.pipeline = pipeline
        self.scale_weights = scale_weights  # comparator for --scale auto, if the bundle has one

    @property
    def recipe(self) -> Recipe:
        return self.manifest.recipe

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], readonly: bool = True, device: str | None = "auto"
    ) -> Bundle:
        root = Path(root)
        for attempt in range(OPEN_RETRIES):
            manifest = read_manifest(root)
            gen = gen_dir(root, manifest.generation)
            try:
                return cls.open_generation(root, manifest, gen, readonly, device)
            except (BundleError, OSError):
                # A writer may have published a new generation and swept this one
                # between our reading the manifest and opening its files: read again.
                if (
                    attempt + 1 == OPEN_RETRIES
                    or read_manifest(root).generation == manifest.generation
                ):
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def open_generation(
        cls, root: Path, manifest: Manifest, gen: Path, readonly: bool, device: str | None = "auto"
    ) -> Bundle:
        for name in (INDEX_FILE, META_DIR, STATE_FILE):
            if not (gen / name).exists():
                raise BundleError(f"{root}: bundle is incomplete ({gen.name}/{name} missing)")
        weights = None
        if manifest.weights_sha256 is not None:
            weights = gen / WEIGHTS_FILE
            if not weights.is_file():
                raise BundleError(f"{root}: model weights missing ({gen.name}/{WEIGHTS_FILE})")
            if sha256_file(weights) != manifest.weights_sha256:
                raise BundleError(f"{root}: {gen.name}/{WEIGHTS_FILE} does not match its checksum")
        pipeline = TilePipeline(manifest.recipe, weights=weights, device=device)
        scale_weights = None
        if manifest.scale_weights_sha256 is not None:
            scale_weights = gen / SCALE_FILE
            if not scale_weights.is_file() or (
                sha256_file(scale_weights) != manifest.scale_weights_sha256
            ):
                raise BundleError(f"{root}: {gen.name}/{SCALE_FILE} is missing or changed")
        if (
            pipeline.descriptor_spec != manifest.descriptor
            or pipeline.encoder_spec != manifest.encoder
        ):
            raise BundleMismatchError(
                f"{root}: component specs of the bundle differ from those its recipe "
                f"{manifest.recipe.name!r} builds in this cbir"
            )
        if sha256_file(gen / STATE_FILE) != manifest.pipeline_sha256:
            raise BundleError(f"{root}: {gen.name}/{STATE_FILE} does not match its checksum")
        pipeline.load_state(gen / STATE_FILE)
        try:
            index = load_tile_index(gen / INDEX_FILE, manifest.index_kind, manifest.recipe.index)
        except (RuntimeError, ValueError) as exc:
            raise BundleError(f"{root}: unreadable Faiss index ({exc})") from exc
        try:
            meta = MetadataStore(gen / META_DIR, readonly=readonly)
        except Exception as exc:  # lmdb.Error has no common base with OSError
            raise BundleError(f"{root}: unreadable LMDB store ({exc})") from exc
        n_meta = meta.tile_count()
        if not (index.ntotal == n_meta == manifest.counts.tiles):
            meta.close()
            raise BundleError(
                f"{root}: inconsistent bundle (Faiss {index.ntotal} tiles, LMDB {n_meta}, "
                f"manifest {manifest.counts.tiles})"
            )
        local, local_index = None, None
        if manifest.local is not None:
            try:
                local, local_index = _open_local(root, manifest, gen, device, meta)
            except BaseException:
                meta.close()
                raise
        return cls(root, manifest, index, meta, pipeline, scale_weights, local, local_index)

    def close(self) -> None:
        self.meta.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_local(
    root: Path, manifest: Manifest, gen: Path, device: str | None, meta: MetadataStore
) -> tuple[LocalStage, FloatTileIndex]:
    """Load and check a bundle's local features: weights, PCA state, index, counts."""
    from cbir.delf.stage import LocalStage

    lm, cfg = manifest.local, manifest.recipe.local
    assert lm is not None
    if cfg is None:
        raise BundleError(f"{root}: manifest lists local features but its recipe has none")
    weights = None
    if lm.weights_file is not None:
        weights = gen / lm.weights_file
        if not weights.is_file() or sha256_file(weights) != lm.weights_sha256:
            raise BundleError(f"{root}: {gen.name}/{lm.weights_file} is missing or changed")
    for name in (LOCAL_INDEX_FILE, LOCAL_STATE_FILE):
        if not (gen / name).exists():
            raise BundleError(f"{root}: bundle is incomplete ({gen.name}/{name} missing)")
    if sha256_file(gen / LOCAL_STATE_FILE) != lm.state_sha256:
        raise BundleError(f"{root}: {gen.name}/{LOCAL_STATE_FILE} does not match its checksum")
    stage = LocalStage(cfg, weights, device)
    if stage.spec != lm.spec:
        raise BundleMismatchError(
            f"{root}: local features of the bundle differ from those its recipe builds here"
        )
    stage.load_state(gen / LOCAL_STATE_FILE)
    try:
        index = FloatTileIndex.load(gen / LOCAL_INDEX_FILE, cfg.index_config())
    except (RuntimeError, ValueError) as exc:
        raise BundleError(f"{root}: unreadable local Faiss index ({exc})") from exc
    if index.ntotal != lm.features:
        raise BundleError(
            f"{root}: inconsistent bundle (local index {index.ntotal} rows, manifest {lm.features})"
        )
    return stage, index
