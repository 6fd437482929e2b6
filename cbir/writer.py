"""Writing a bundle: a transaction stages a new generation (copied from the live one, or
fresh) and publishes it by atomically replacing the manifest; a failed or killed run
leaves the previous bundle as it was, and its leftovers are swept next time."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb

from cbir import __version__
from cbir.bundle import Bundle
from cbir.checksum import sha256_file
from cbir.errors import BundleError
from cbir.float_index import FloatTileIndex
from cbir.manifest import (
    FORMAT_VERSION,
    INDEX_FILE,
    LOCAL_INDEX_FILE,
    LOCAL_STATE_FILE,
    LOCAL_WEIGHTS_FILE,
    MANIFEST,
    META_DIR,
    SCALE_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    Counts,
    LocalManifest,
    Manifest,
    gen_dir,
    now,
    read_manifest,
)
from cbir.metadata import MetadataStore
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe
from cbir.tile_index import TileIndex

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(f"{root}: another cbir process is writing this bundle") from None
        yield


def _fsync_tree(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_GENERATION = re.compile(r"gen-\d{6}")

#: Below this much free space, a failed write says the disk is probably full.
LOW_SPACE_BYTES = 64 << 20

#: OSErrors of a failed write (not of a bad input file).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def write_failed(root: Path, exc: BaseException) -> BundleError:
    """The error for a write that failed while staging or publishing a generation: names
    the bundle, the cause and the device's free space; the live bundle is unchanged."""
    try:
        free = shutil.disk_usage(root).free
        space = f"{free / 1e6:.0f} MB free on its device"
        if free < LOW_SPACE_BYTES:
            space += ": the disk is full or nearly"
    except OSError:
        space = "free space unknown"
    return BundleError(
        f"{root}: could not write the new generation ({exc}; {space}); the bundle is unchanged"
    )


def _first_build_debris(p: Path) -> bool:
    """What a failed or killed first build can leave in a directory with no manifest:
    the lock file, a stage, an unpublished generation, the manifest's temp file."""
    name = p.name
    return (
        name in (".lock", f".{MANIFEST}.tmp")
        or name.startswith(".tmp-gen-")
        or (p.is_dir() and _GENERATION.fullmatch(name) is not None)
    )


def _sweep(root: Path, keep: int | None) -> None:
    """Delete generation and temp directories other than generation `keep`."""
    for p in root.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-gen-") or p.name.startswith("gen-")):
            if keep is None or p != gen_dir(root, keep):
                shutil.rmtree(p, ignore_errors=True)


class BundleWriter:
    """A write transaction on a bundle: stage a new generation, then publish or discard.

    Use `transaction(root, ...)`. Inside, `writer.index` and `writer.meta` are the new
    generation's (copied from the live one, or fresh); `commit(...)` publishes it.
    """

    def __init__(self, root: Path, previous: Manifest | None, stage: Path, fresh: bool) -> None:
        self.root = root
        self.fresh = fresh
        self.previous = previous
        self.stage = stage
        self.index: TileIndex | None = None
        self.meta: MetadataStore | None = None
        self.pipeline: TilePipeline | None = None
        self.scale_weights: Path | None = None
        self.local: LocalStage | None = None
        self.local_index: FloatTileIndex | None = None
        self.committed = False

    def commit(self, recipe: Recipe, counts: Counts) -> Manifest:
        """Write the staged generation's files and publish it (one atomic manifest
        replace); a failed write (disk full, I/O error) is a BundleError naming the bundle
        and its free space, and publishes nothing."""
        try:
            return self._commit(recipe, counts)
        except (OSError, lmdb.Error) as exc:
            if self.committed:
                raise
            raise write_failed(self.root, exc) from None

    def _commit(self, recipe: Recipe, counts: Counts) -> Manifest:
        assert self.index is not None and self.meta is not None and self.pipeline is not None
        n_meta = self.meta.tile_count()
        if not (self.index.ntotal == n_meta == counts.tiles):
            raise BundleError(
                f"{self.root}: refusing to publish an inconsistent bundle (Faiss "
                f"{self.index.ntotal} tiles, LMDB {n_meta}, counted {counts.tiles})"
            )
        self.index.save(self.stage / INDEX_FILE)
        self.pipeline.save_state(self.stage / STATE_FILE)
        weights_sha = None
        if self.pipeline.weights is not None:
            staged = self.stage / WEIGHTS_FILE
            if self.pipeline.weights.resolve() != staged.resolve():
                shutil.copyfile(self.pipeline.weights, staged)
            weights_sha = sha256_file(staged)
        scale_sha = None
        if self.scale_weights is not None:
            staged = self.stage / SCALE_FILE
            if self.scale_weights.resolve() != staged.resolve():
                shutil.copyfile(self.scale_weights, staged)
            scale_sha = sha256_file(staged)
        local = _write_local(self, weights_sha)
        self.meta.env.sync(True)
        self.meta.close()
        self.meta = None
        generation = (self.previous.generation + 1) if self.previous else 1
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            cbir_version=__version__,
            recipe=recipe,
            descriptor=self.pipeline.descriptor_spec,
            encoder=self.pipeline.encoder_spec,
            index_kind=self.index.kind,
            nlist=self.index.nlist,
            generation=generation,
            counts=counts,
            pipeline_sha256=sha256_file(self.stage / STATE_FILE),
            weights_sha256=weights_sha,
            scale_weights_sha256=scale_sha,
            local=local,
            created=self.previous.created if self.previous and not self.fresh else now(),
            updated=now(),
        )
        final = gen_dir(self.root, generation)
        if final.exists():
            shutil.rmtree(final)
        _fsync_tree(self.stage)
        os.rename(self.stage, final)
        tmp_manifest = self.root / f".{MANIFEST}.tmp"
        try:
            tmp_manifest.write_text(manifest.model_dump_json(indent=2))
            with open(tmp_manifest, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_manifest, self.root / MANIFEST)  # the atomic publish
        except BaseException:
            tmp_manifest.unlink(missing_ok=True)
            shutil.rmtree(final, ignore_errors=True)
            raise
        self.committed = True  # published: nothing below may undo it
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.committed = True
        _sweep(self.root, keep=generation)
        return manifest


def _write_local(writer: BundleWriter, weights_sha: str | None) -> LocalManifest | None:
    """Stage a writer's local index, PCA state and extractor weights (shared with the
    descriptor's weights.pt when they are the same file); check the counts agree."""
    if writer.local is None:
        return None
    assert writer.local_index is not None and writer.meta is not None
    n_meta = writer.meta.local_feature_count()
    if writer.local_index.ntotal != n_meta:
        raise BundleError(
            f"{writer.root}: refusing to publish an inconsistent bundle (local index "
            f"{writer.local_index.ntotal} rows, LMDB {n_meta})"
        )
    writer.local_index.save(writer.stage / LOCAL_INDEX_FILE)
    writer.local.save_state(writer.stage / LOCAL_STATE_FILE)
    source = writer.local.weights
    weights_file, sha = None, None
    if source is not None:
        descriptor_weights = writer.pipeline.weights if writer.pipeline else None
        if descriptor_weights is not None and source.resolve() == descriptor_weights.resolve():
            weights_file, sha = WEIGHTS_FILE, weights_sha
        else:
            staged = writer.stage / LOCAL_WEIGHTS_FILE
            if source.resolve() != staged.resolve():
                shutil.copyfile(source, staged)
            weights_file, sha = LOCAL_WEIGHTS_FILE, sha256_file(staged)
    return LocalManifest(
        spec=writer.local.spec,
        features=writer.local_index.ntotal,
        state_sha256=sha256_file(writer.stage / LOCAL_STATE_FILE),
        weights_file=weights_file,
        weights_sha256=sha,
    )


def _previous_manifest(root: Path, tolerate_broken: bool) -> Manifest | None:
    """The live manifest, None if there is none; a broken one is an error unless it is
    about to be overwritten (then it counts as none)."""
    if not (root / MANIFEST).exists():
        return None
    try:
        return read_manifest(root)
    except BundleError:
        if tolerate_broken:
            return None
        raise


@contextlib.contextmanager
def transaction(
    root: str | os.PathLike[str], create: bool, overwrite: bool = False
) -> Iterator[BundleWriter]:
    """Open a write transaction on bundle `root`.

    create=False: the bundle must exist; its live generation is copied into the stage
    (LMDB compacted copy; Faiss index loaded) and `writer.pipeline` is its fitted pipeline.
    create=True: the stage starts empty; an existing bundle is refused unless `overwrite`.
    Nothing visible changes unless `commit` runs; any exception discards the stage.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root}: exists and is not a directory")
    made_root = not root.exists()
    if create and root.exists() and any(not _first_build_debris(p) for p in root.iterdir()):
        if not (root / MANIFEST).exists():
            raise BundleError(f"{root}: directory is not empty and is not an index bundle")
        if not overwrite:
            raise BundleError(f"{root}: an index bundle exists already (use --overwrite)")
    previous = _previous_manifest(root, tolerate_broken=create and overwrite)
    if not create and previous is None:
        raise BundleError(f"{root}: not an index bundle (no {MANIFEST})")
    committed = False
    try:
        with _locked(root):
            # Read again under the lock: another writer may have published meanwhile.
            previous = _previous_manifest(root, tolerate_broken=create and overwrite)
            live = Bundle.open(root) if not create else None
            _sweep(root, keep=previous.generation if previous else None)
            if previous is None:
                (root / f".{MANIFEST}.tmp").unlink(missing_ok=True)
            stage = root / f".tmp-gen-{os.getpid()}"
            stage.mkdir()
            writer = BundleWriter(root, previous, stage, fresh=create)
            try:
                if live is not None:
                    (stage / META_DIR).mkdir()
                    try:
                        live.meta.copy_to(stage / META_DIR)
                    except (OSError, lmdb.Error) as exc:
                        raise write_failed(root, exc) from None
                    writer.index = live.index
                    writer.pipeline = live.pipeline
                    writer.scale_weights = live.scale_weights
                    writer.local = live.local
                    writer.local_index = live.local_index
                    live.close()
                    live = None
                (stage / META_DIR).mkdir(exist_ok=True)
                writer.meta = MetadataStore(stage / META_DIR, readonly=False)
                try:
                    yield writer
                except lmdb.Error as exc:  # writing the staged LMDB (disk full, I/O error)
                    raise write_failed(root, exc) from None
                except OSError as exc:
                    if exc.errno in WRITE_ERRNOS:
                        raise write_failed(root, exc) from None
                    raise
                committed = writer.committed
            finally:
                if live is not None:
                    live.close()
                if writer.meta is not None:
                    writer.meta.close()
                if not writer.committed:
                    shutil.rmtree(stage, ignore_errors=True)
    finally:
        if made_root and not committed:
            shutil.rmtree(root, ignore_errors=True)  # a failed first build leaves no directory
