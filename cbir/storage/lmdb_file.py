"""A check of an LMDB data file before it is memory-mapped: a file shorter than the
pages its meta page says are in use (a truncated copy, a disk that filled) would kill
the process with SIGBUS on first access instead of raising an error."""

from __future__ import annotations

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
