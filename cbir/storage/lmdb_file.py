"""A segment's LMDB file: a check before it is memory-mapped (a file shorter than the
pages its meta page says are in use, a truncated copy or a disk that filled, would kill
the process with SIGBUS on first access instead of raising an error), and the map
sizes stores are opened with."""

from __future__ import annotations

import resource
import struct
from pathlib import Path

from cbir.errors import BundleError

#: LMDB's MDB_meta, after the 16-byte page header of a 64-bit build: mm_magic (u32),
#: mm_version (u32), mm_address, mm_mapsize, mm_dbs[2] (48 bytes each; mm_dbs[0].md_pad
#: holds the page size), mm_last_pg (u64), mm_txnid (u64).
_MAGIC, _PSIZE_AT, _LAST_PG_AT = 0xBEEFC0DE, 40, 136
_MIN_PAGE = 512


def _meta(head: bytes, offset: int) -> tuple[int, int, int] | None:
    """(page size, last page, txn id) of the meta page at `offset`, None if not one."""
    if len(head) < offset + _LAST_PG_AT + 16:
        return None
    (magic,) = struct.unpack_from("<I", head, offset + 16)
    if magic != _MAGIC:
        return None
    (psize,) = struct.unpack_from("<I", head, offset + _PSIZE_AT)
    last_pg, txnid = struct.unpack_from("<QQ", head, offset + _LAST_PG_AT)
    return psize, last_pg, txnid


def check_lmdb_file(env_dir: Path) -> None:
    """BundleError naming `env_dir/data.mdb` when it is missing pages (shorter than its
    newest meta page's last page) or has no valid meta page. A missing file passes (LMDB
    creates or reports it)."""
    data = env_dir / "data.mdb"
    if not data.exists():
        return
    size = data.stat().st_size
    with data.open("rb") as fh:
        head = fh.read(2 * 65536)
    first = _meta(head, 0)
    if first is None or first[0] < _MIN_PAGE:
        raise BundleError(f"{data}: not an LMDB data file, or its header is damaged")
    psize = first[0]
    metas = [m for m in (first, _meta(head, psize)) if m is not None]
    _, last_pg, _ = max(metas, key=lambda m: m[2])
    needed = (last_pg + 1) * psize
    if size < needed:
        raise BundleError(
            f"{data}: truncated ({size} bytes; its pages need {needed}): the bundle's "
            "metadata is damaged (restore it, or rebuild the bundle)"
        )


#: LMDB map size of a store being written: the file grows with the data, this is only
#: the ceiling, lowered to a quarter of the process's address-space limit
#: (`ulimit -v`) when one is set. A published store is read with a map of its own size.
MAP_SIZE = 1 << 40
MIN_MAP = 1 << 20


def writer_map_size() -> int:
    """Bytes of address space a staged store may map: MAP_SIZE, or a quarter of
    RLIMIT_AS when that is lower (several stores and the networks share it)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return MAP_SIZE
    return max(MIN_MAP, min(MAP_SIZE, soft // 4))


def address_limit_note() -> str:
    """'' without an address-space limit; else a note naming it, for an error."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return ""
    return (
        f" (this process may map {soft / 2**30:.1f} GiB: `ulimit -v`; a store being written "
        f"maps at most a quarter of it, {writer_map_size() / 2**30:.1f} GiB)"
    )


def reader_map_size(path: Path) -> int:
    """A read-only store maps exactly its data file (LMDB rounds it up to the pages the
    file's meta page says are in use)."""
    data = path / "data.mdb"
    size = data.stat().st_size if data.is_file() else 0
    return max(MIN_MAP, size)
