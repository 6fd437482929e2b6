"""Writing a bundle (format 3, see cbir.storage.manifest): a transaction stages new segments (and
new collection state when it is fitted), records tombstones and labels, and publishes by
atomically replacing the manifest. Live segments are never modified, so a write costs
the data it adds; a failed or killed run leaves the previous bundle as it was, and its
leftovers are swept next time."""

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

from cbir.errors import BundleError
from cbir.index.local import load_local_index
from cbir.index.tile import load_tile_index
from cbir.storage.bundle import Bundle, Segment
from cbir.storage.lmdb_file import address_limit_note, writer_map_size
from cbir.storage.manifest import (
    EMPTY_INDEX_FILE,
    EMPTY_LOCAL_INDEX_FILE,
    MANIFEST,
    UNPUBLISHED,
    Manifest,
    read_manifest,
    readonly_error,
    segment_name,
)
from cbir.storage.publish import publish
from cbir.storage.state import CollectionState, SegmentStage

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage
    from cbir.pipeline import TilePipeline
    from cbir.recipes import Recipe


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / ".lock", "w")  # noqa: SIM115 - closed below
    except OSError as exc:  # a read-only or immutable folder, a .lock that is a folder
        raise BundleError(
            f"{root}: cannot take the writers' lock ({exc.strerror}: {exc.filename}); "
            "the bundle is unchanged"
        ) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BundleError(f"{root}: another cbir process is writing this bundle") from None
        yield


#: Directories a bundle may hold: its state and segments, format-2 generations, stages.
#: A generation, segment or state directory; group 2 is the publish that wrote it.
_NUMBERED = re.compile(r"(gen|seg|state)-(\d{6,})(-\d+)?")

#: Below this much free space, a failed write says the disk is probably full.
LOW_SPACE_BYTES = 64 << 20

#: OSErrors of a failed write (not of a bad input file).
WRITE_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM
}  # fmt: skip


def write_failed(root: Path, exc: BaseException) -> BundleError:
    """The error for a write that failed while staging or publishing: names the bundle,
    the cause and the device's free space; the live bundle is unchanged."""
    low = False
    try:
        free = shutil.disk_usage(root).free
        space = f"{free / 1e6:.0f} MB free on its device"
        low = free < LOW_SPACE_BYTES
        if low:
            space += ": the disk is full or nearly"
    except OSError:
        space = "free space unknown"
    if isinstance(exc, lmdb.MapFullError):
        return BundleError(
            f"{root}: the new segment's LMDB map of {writer_map_size() / 2**30:.1f} GiB is "
            f"full{address_limit_note()}; the bundle is unchanged"
        )
    full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)
    if full or (low and isinstance(exc, lmdb.Error)):  # LMDB says EIO when its disk fills
        return BundleError(
            f"{root}: no space left on its device ({space}); the new generation was not "
            "written and the bundle is unchanged"
        )
    return BundleError(
        f"{root}: could not write the new generation ({exc}; {space}); the bundle is unchanged"
    )


def _dead_writers(p: Path) -> bool:
    """Whether directory `p` is a writer's stage (`.tmp-*`) or a directory it moved into
    place but never published (it still holds the UNPUBLISHED marker)."""
    return p.name.startswith(".tmp-") or (
        _NUMBERED.fullmatch(p.name) is not None and (p / UNPUBLISHED).is_file()
    )


def _first_build_debris(p: Path) -> bool:
    """What a failed or killed first build can leave in a directory with no manifest:
    the lock file, the manifest's temp file, and its dead writers' directories."""
    if p.name in (".lock", f".{MANIFEST}.tmp"):
        return True
    return p.is_dir() and _dead_writers(p)


def _referenced(manifest: Manifest) -> set[str]:
    keep = {manifest.state, *(s.name for s in manifest.segments)}
    if manifest.format_version == 2:
        keep.add(f"gen-{manifest.generation:06d}")
    return keep


def leftovers(root: Path, manifest: Manifest) -> list[Path]:
    """Directories of `root` that are provably a dead writer's leftovers or retired by a
    published manifest, given a `manifest` that was validated (everything it names is
    there): stages (`.tmp-*`), directories moved into place but never published (the
    UNPUBLISHED marker), and numbered directories it does not reference whose number is
    at most its generation (a later publish dropped them). A BundleError when a numbered
    directory without the marker is newer than the manifest: the manifest is an older
    copy (put back from a backup?), and the newer segments would be lost."""
    keep = _referenced(manifest)
    out: list[Path] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name in keep:
            continue
        if _dead_writers(p):
            out.append(p)
        elif m := _NUMBERED.fullmatch(p.name):
            if int(m.group(2)) > manifest.generation:
                raise BundleError(
                    f"{root}: {p.name} is newer than the manifest (generation "
                    f"{manifest.generation}): the manifest is an older copy; restore the "
                    "newest one (nothing was changed)"
                )
            out.append(p)
    return out


def sweep(paths: list[Path]) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def _mark_published(root: Path, manifest: Manifest) -> None:
    """Remove the UNPUBLISHED markers of the directories `manifest` references."""
    for name in _referenced(manifest):
        (root / name / UNPUBLISHED).unlink(missing_ok=True)


def _highest_number(root: Path) -> int:
    """The highest generation number in the names of the bundle's directories."""
    numbers = [int(m.group(2)) for p in root.iterdir() if (m := _NUMBERED.fullmatch(p.name))]
    return max(numbers, default=0)


def state_of(bundle: Bundle) -> CollectionState:
    """The live state of an opened bundle (format 2: to be written anew)."""
    man = bundle.manifest
    empty_local = None
    if man.format_version == 2:
        first = bundle.segments[0]
        empty = first.index.emptied()
        if first.local_index is not None:
            empty_local = first.local_index.emptied()
        return CollectionState(
            bundle.pipeline, empty, bundle.scale_weights, bundle.local, empty_local
        )
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
    return CollectionState(
        bundle.pipeline, empty, bundle.scale_weights, bundle.local, empty_local, man.state, man
    )


class BundleWriter:
    """A write transaction on a bundle. Use `transaction(root, ...)`.

    `live` is the bundle as published (None for a new one). Writes: `fit_state(...)` or
    `state` (a new bundle); `new_segment()` stages slides; `tombstone(slide_ids)` removes
    slides; `drop(segments)` takes segments out (after merging them); `labels` are the
    bundle's labels by slide id. `commit(recipe)` publishes it all at once.
    """

    def __init__(
        self, root: Path, previous: Manifest | None, live: Bundle | None, floor: int = 0
    ) -> None:
        self.root = root
        self.previous = previous
        self.live = live
        # Names are never reused: past the live generation and any directory seen.
        self.generation = max(previous.generation if previous else 0, floor) + 1
        self.state: CollectionState | None = state_of(live) if live else None
        self.segments: list[SegmentStage] = []
        self.dead: dict[str, set[int]] = {}  # live segment name -> tombstoned slides
        self.dropped: set[str] = set()
        self.labels: dict[int, dict[str, str]] = dict(previous.labels) if live else {}
        self.next_slide_id = previous.next_slide_id if previous else 1
        self.committed = False

    # -- reading what is live ----------------------------------------------------------
    @property
    def pipeline(self) -> TilePipeline:
        assert self.state is not None
        return self.state.pipeline

    @property
    def local(self) -> LocalStage | None:
        return self.state.local if self.state else None

    @property
    def scale_weights(self) -> Path | None:
        return self.state.scale_weights if self.state else None

    def live_segments(self) -> list[Segment]:
        return [
            s for s in (self.live.segments if self.live else []) if s.entry.name not in self.dropped
        ]

    def slide_id_for_path(self, path: str) -> int | None:
        """The live slide indexed from `path` (not tombstoned in this transaction)."""
        if self.live is None:
            return None
        sid = self.live.meta.slide_id_for_path(path)
        if sid is None or any(sid in d for d in self.dead.values()):
            return None
        return sid

    # -- changes -----------------------------------------------------------------------
    def new_segment(self) -> SegmentStage:
        """A fresh segment staged in the bundle directory; its slides get new ids."""
        n = len(self.segments)
        name = segment_name(self.generation, n)
        stage = SegmentStage(self.root / f".tmp-{os.getpid()}-{name}", name)
        self.segments.append(stage)
        return stage

    def take_slide_ids(self, n: int) -> int:
        """Reserve n new slide ids; returns the first."""
        first = self.next_slide_id
        self.next_slide_id += n
        return first

    def tombstone(self, slide_ids: set[int]) -> None:
        """Mark live slides removed: their tiles leave search and counts at commit."""
        for seg in self.live_segments():
            mine = set(slide_ids) & {r.slide_id for r in seg.store.slide_list()}
            if mine:
                self.dead.setdefault(seg.entry.name, set()).update(mine)
        for sid in slide_ids:
            self.labels.pop(sid, None)

    def drop(self, names: set[str]) -> None:
        """Take live segments out of the bundle (their live slides were merged into a
        staged segment)."""
        self.dropped |= names

    def commit(self, recipe: Recipe) -> Manifest:
        """Write the staged files and publish them (one atomic manifest replace); a
        failed write (disk full, I/O error) is a BundleError naming the bundle and its
        free space, and publishes nothing."""
        assert self.state is not None
        try:
            manifest = publish(self, recipe)
        except (OSError, lmdb.Error) as exc:
            if self.committed:
                raise
            raise write_failed(self.root, exc) from None
        _mark_published(self.root, manifest)
        with contextlib.suppress(BundleError):  # (nothing is newer than what we published)
            sweep(leftovers(self.root, manifest))
        return manifest

    def discard(self) -> None:
        for s in self.segments:
            s.discard()
        if self.state is not None:
            self.state.discard_stage()


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
    root: str | os.PathLike[str], create: bool, overwrite: bool = False, upgrade: bool = False
) -> Iterator[BundleWriter]:
    """Open a write transaction on bundle `root`.

    create=False: the bundle must exist; `writer.live` is it, opened, and `writer.state`
    its collection state. create=True: nothing is live; an existing bundle is refused
    unless `overwrite` (it is replaced at commit). A bundle of an older format is refused
    unless `upgrade`. Nothing visible changes unless `commit` runs; any exception
    discards the stage.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root}: exists and is not a directory")
    made_root = not root.exists()
    if create and root.exists() and any(not _first_build_debris(p) for p in root.iterdir()):
        if not (root / MANIFEST).exists():
            raise BundleError(
                f"{root}: directory is not empty and is not an index bundle (no {MANIFEST})"
            )
        if not overwrite:
            raise BundleError(f"{root}: an index bundle exists already (use --overwrite)")
    previous = _previous_manifest(root, tolerate_broken=create and overwrite)
    if not create and previous is None:
        raise BundleError(f"{root}: not an index bundle (no {MANIFEST})")
    if previous is not None and previous.readonly and not (create or upgrade):
        raise readonly_error(root, previous)  # before the lock: a refusal leaves no file
    committed = False
    with _locked(root):
        try:
            # Read again under the lock: another writer may have published meanwhile.
            previous = _previous_manifest(root, tolerate_broken=create and overwrite)
            if create and previous is not None and not overwrite:  # a first build won
                made_root = False  # theirs: never removed
                raise BundleError(f"{root}: an index bundle exists already (use --overwrite)")
            if previous is not None and previous.readonly and not (create or upgrade):
                raise readonly_error(root, previous)
            floor = _highest_number(root)
            live = None
            if not create:
                assert previous is not None
                # Everything the manifest names is checked before any file is touched.
                live = Bundle.open_manifest(root, previous)
                try:
                    stale = leftovers(root, previous)
                except BaseException:
                    live.close()
                    raise
                _mark_published(root, previous)
                sweep(stale)
            elif previous is None:  # a first build: only what failed first builds left
                sweep([p for p in root.iterdir() if p.is_dir() and _first_build_debris(p)])
                (root / f".{MANIFEST}.tmp").unlink(missing_ok=True)
            # (an overwrite sweeps the bundle it replaces once its own manifest is live)
            writer = BundleWriter(root, previous, live, floor)
            try:
                yield writer
            except lmdb.Error as exc:  # writing a staged LMDB (disk full, I/O error)
                if writer.committed:
                    raise
                raise write_failed(root, exc) from None
            except OSError as exc:
                if exc.errno in WRITE_ERRNOS and not writer.committed:
                    raise write_failed(root, exc) from None
                raise
            finally:
                committed = writer.committed
                if live is not None:
                    live.close()
                if not committed:
                    writer.discard()
        finally:  # a failed first build leaves no directory: removed while this process
            # holds its lock (one that was refused the lock never removes another's)
            if made_root and not committed:
                shutil.rmtree(root, ignore_errors=True)
