"""`cbir verify`: every file of a bundle checked against its manifest.

What is checked when (see also cbir.storage.bundle):
- every open (search, info, serve, every writer): the manifest parses and its values
  are consistent (pydantic constraints, names inside the bundle, counts that add up);
  the state's small files (pipeline.npz, weights) match their sha256; each segment file
  exists with the size the manifest records; LMDB headers are whole; Faiss headers
  parse; index rows == manifest rows == LMDB tiles; tombstones name slides that exist.
- `cbir verify` (here): all of that, plus the sha256 of every segment file, each LMDB
  read through (every record of every database), and directories no manifest names.
  Files whose checksum differs are not opened (a damaged LMDB page could crash the
  reader): they are reported and skipped. A directory newer than the manifest (an
  older manifest put back) is reported against the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
from pydantic import BaseModel

from cbir.errors import BundleError, CbirError
from cbir.storage.file_checks import sha256_matches
from cbir.storage.manifest import (
    EMPTY_INDEX_FILE,
    EMPTY_LOCAL_INDEX_FILE,
    LOCAL_STATE_FILE,
    MANIFEST,
    META_DIR,
    SCALE_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    Manifest,
    SegmentEntry,
    read_manifest,
)


class Damage(BaseModel):
    """One damaged file (or directory) and what is wrong with it."""

    path: str  # relative to the bundle
    problem: str


class VerifyReport(BaseModel):
    bundle: str
    format_version: int | None
    generation: int | None
    segments: int
    files: int  # files whose checksum was computed
    bytes: int  # bytes read for checksums
    damaged: list[Damage]
    unreferenced: list[str]  # directories no manifest names (swept by the next writer)

    @property
    def ok(self) -> bool:
        return not self.damaged


def verify_bundle(root: str | os.PathLike[str]) -> VerifyReport:
    """Check every checksum and count of bundle `root`; never raises for damage (it is
    reported), only for a path that is not a bundle directory."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    report = VerifyReport(
        bundle=str(root),
        format_version=None,
        generation=None,
        segments=0,
        files=0,
        bytes=0,
        damaged=[],
        unreferenced=[],
    )
    try:
        manifest = read_manifest(root)
    except BundleError as exc:
        report.damaged.append(Damage(path=MANIFEST, problem=_reason(exc, root)))
        return report
    report.format_version, report.generation = manifest.format_version, manifest.generation
    if manifest.format_version < 3:
        _verify_format2(root, manifest, report)
        return report
    _verify_state(root, manifest, report)
    for entry in manifest.segments:
        report.segments += 1
        _verify_segment(root, manifest, entry, report)
    from cbir.storage.writer import leftovers

    try:
        report.unreferenced = [p.name for p in leftovers(root, manifest)]
    except BundleError as exc:  # a directory newer than the manifest: an older copy
        report.damaged.append(Damage(path=MANIFEST, problem=_reason(exc, root)))
    return report


def _reason(exc: BaseException, root: Path) -> str:
    """An error's text without the bundle path it starts with."""
    text = str(exc)
    for prefix in (f"{root / MANIFEST}: ", f"{root}: "):
        text = text.removeprefix(prefix)
    return text


def _checksum(root: Path, rel: str, sha: str | None, size: int | None, r: VerifyReport) -> bool:
    """Whether file `rel` exists, has `size` bytes and checksum `sha` (None: unchecked);
    a mismatch is reported."""
    path = root / rel
    if not path.is_file():
        r.damaged.append(Damage(path=rel, problem="missing"))
        return False
    have = path.stat().st_size
    if size is not None and have != size:
        r.damaged.append(Damage(path=rel, problem=f"{have} bytes, the manifest says {size}"))
        return False
    if sha is None:
        return True
    r.files += 1
    r.bytes += have
    if not sha256_matches(path, sha):  # opening it below then hashes it no second time
        r.damaged.append(Damage(path=rel, problem="sha256 differs from the manifest's"))
        return False
    return True


def _verify_state(root: Path, m: Manifest, r: VerifyReport) -> None:
    state = m.state
    if not (root / state).is_dir():
        r.damaged.append(Damage(path=state, problem="missing (the manifest's collection state)"))
        return
    _checksum(root, f"{state}/{STATE_FILE}", m.pipeline_sha256, None, r)
    if m.weights_sha256 is not None:
        _checksum(root, f"{state}/{WEIGHTS_FILE}", m.weights_sha256, None, r)
    if m.scale_weights_sha256 is not None:
        _checksum(root, f"{state}/{SCALE_FILE}", m.scale_weights_sha256, None, r)
    empties = [EMPTY_INDEX_FILE]
    if m.local is not None:
        _checksum(root, f"{state}/{LOCAL_STATE_FILE}", m.local.state_sha256, None, r)
        if m.local.weights_file is not None and m.local.weights_sha256 is not None:
            _checksum(root, f"{state}/{m.local.weights_file}", m.local.weights_sha256, None, r)
        empties.append(EMPTY_LOCAL_INDEX_FILE)
    for name in empties:  # checksummed since cbir recorded it; else it must parse
        rel = f"{state}/{name}"
        if _checksum(root, rel, m.state_sha256.get(name), None, r) and name not in m.state_sha256:
            problem = _faiss_problem(root / rel)
            if problem:
                r.damaged.append(Damage(path=rel, problem=problem))
    if not r.damaged:
        _verify_specs(root, m, r)


def _verify_specs(root: Path, m: Manifest, r: VerifyReport) -> None:
    """The manifest's component specs against what its recipe builds in this cbir (as
    every open checks; a network recipe imports torch here)."""
    from cbir.storage.bundle import _open_state

    try:
        _open_state(root, m, root / m.state, "cpu")
    except (CbirError, OSError, RuntimeError, ValueError) as exc:
        r.damaged.append(Damage(path=MANIFEST, problem=_reason(exc, root)))


def _faiss_problem(path: Path) -> str | None:
    import faiss

    try:
        faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    except RuntimeError:
        try:
            faiss.read_index_binary(str(path))
        except RuntimeError as exc:
            return f"not a Faiss index ({str(exc).splitlines()[0][:120]})"
    return None


def _verify_segment(root: Path, m: Manifest, entry: SegmentEntry, r: VerifyReport) -> None:
    seg = root / entry.name
    if not seg.is_dir():
        r.damaged.append(Damage(path=entry.name, problem="missing (named by the manifest)"))
        return
    whole = True
    for name, sha in entry.sha256.items():
        whole &= _checksum(root, f"{entry.name}/{name}", sha, entry.sizes.get(name), r)
    for product in entry.artifacts.values():
        for name in product.files:
            if name not in entry.sha256:
                whole &= _checksum(root, f"{entry.name}/{name}", None, None, r)
    if not whole:
        return  # damaged files are not opened
    problem = _lmdb_problem(seg / META_DIR)
    if problem:
        r.damaged.append(Damage(path=f"{entry.name}/{META_DIR}", problem=problem))
        return
    from cbir.storage.bundle import _open_segment

    try:
        segment = _open_segment(root, m, entry, seg, 3)
    except (BundleError, OSError, RuntimeError, ValueError) as exc:
        r.damaged.append(Damage(path=entry.name, problem=_reason(exc, root)))
        return
    try:
        tiles = segment.store.tile_count()
        if tiles != entry.tiles:
            r.damaged.append(
                Damage(
                    path=f"{entry.name}/{META_DIR}",
                    problem=f"{tiles} tiles in LMDB, {entry.tiles} rows in the manifest",
                )
            )
    finally:
        segment.store.close()


def _lmdb_problem(env_dir: Path) -> str | None:
    """None when every record of every database of the LMDB at `env_dir` reads."""
    from cbir.storage.lmdb_file import check_lmdb_file, reader_map_size
    from cbir.storage.metadata import DATABASES

    try:  # a truncated map would be a SIGBUS when read: its pages are checked first
        check_lmdb_file(env_dir)
    except BundleError as exc:
        return str(exc).split(": ", 1)[-1]
    try:
        env = lmdb.open(
            str(env_dir),
            readonly=True,
            lock=False,
            max_dbs=len(DATABASES) + 1,
            map_size=reader_map_size(env_dir),
            subdir=True,
        )
    except lmdb.Error as exc:
        return f"unreadable LMDB ({exc})"
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
        for name in names:
            if name not in DATABASES:
                continue
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                for _ in txn.cursor().iternext(keys=True, values=True):
                    pass
    except lmdb.Error as exc:
        return f"unreadable LMDB ({exc})"
    finally:
        env.close()
    return None


def _verify_format2(root: Path, m: Manifest, r: VerifyReport) -> None:
    """A format-2 bundle records only its pipeline's checksum: its LMDB is read through
    and the bundle opened, as a reader opens it (Faiss header, rows, codes)."""
    gen = f"gen-{m.generation:06d}"
    r.segments = 1
    if not (root / gen).is_dir():
        r.damaged.append(Damage(path=gen, problem="missing (named by the manifest)"))
        return
    if not _checksum(root, f"{gen}/{STATE_FILE}", m.pipeline_sha256, None, r):
        return
    problem = _lmdb_problem(root / gen / META_DIR)
    if problem:  # no checksums of its own: every record is read, and the bundle opened
        r.damaged.append(Damage(path=f"{gen}/{META_DIR}", problem=problem))
        return
    from cbir.storage.bundle import Bundle

    try:
        with Bundle.open(root):
            pass
    except (BundleError, OSError, RuntimeError, ValueError) as exc:
        r.damaged.append(Damage(path=gen, problem=_reason(exc, root)))
