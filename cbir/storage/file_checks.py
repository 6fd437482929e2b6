"""What opening a bundle checks of its files: each segment file's size against the
manifest at every open, and sha256 of small segments (and of state files) once per
process; `cbir verify` checks every checksum."""

from __future__ import annotations

from pathlib import Path

from cbir.errors import BundleError
from cbir.files import sha256_file
from cbir.storage.manifest import SegmentEntry

#: Segments up to this many bytes have every file's sha256 checked when first opened
#: in a process (about 0.2 s at 1.3 GB/s); larger ones only sizes and headers at open,
#: checksums by `cbir verify`.
OPEN_CHECKSUM_BYTES = 256 << 20

_SUMMED: set[tuple[str, str, int, int, int]] = set()  # files whose sha256 matched


def sha256_matches(f: Path, sha: str) -> bool:
    """Whether file `f` has sha256 `sha`: hashed once per process, then remembered by
    (sha, path, inode, mtime, size) (published files are never rewritten in place)."""
    st = f.stat()
    key = (sha, str(f.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _SUMMED:
        return True
    if sha256_file(f) != sha:
        return False
    _SUMMED.add(key)
    return True


def check_sums(root: Path, entry: SegmentEntry, path: Path) -> None:
    """sha256 of a segment's files against its manifest (sha256_matches); segments over
    OPEN_CHECKSUM_BYTES skip it."""
    if entry.bytes > OPEN_CHECKSUM_BYTES:
        return
    for name, sha in entry.sha256.items():
        if not (path / name).is_file():
            raise BundleError(f"{root}: {path.name}/{name} is damaged (missing)")
        if not sha256_matches(path / name, sha):
            raise BundleError(
                f"{root}: {path.name}/{name} is damaged (its sha256 differs from the "
                "manifest's; `cbir verify` lists every damaged file)"
            )


def check_sizes(root: Path, entry: SegmentEntry, path: Path) -> None:
    """The cheap check at every open: each file of a segment has the size its manifest
    records (a truncated or grown file is named); checksums are `cbir verify`'s."""
    if entry.sizes:
        for name, size in entry.sizes.items():
            f = path / name
            have = f.stat().st_size if f.is_file() else None
            if have != size:
                what = "missing" if have is None else f"{have} bytes, its manifest says {size}"
                raise BundleError(f"{root}: {path.name}/{name} is damaged ({what})")
    elif entry.sha256:  # written before per-file sizes were recorded
        size = sum((path / f).stat().st_size for f in entry.sha256 if (path / f).is_file())
        if size != entry.bytes:
            raise BundleError(
                f"{root}: segment {path.name} has {size} bytes, its manifest says {entry.bytes}"
            )
