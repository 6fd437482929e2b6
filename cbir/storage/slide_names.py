"""How a user names an indexed slide, the same everywhere (`label`, `remove`, `--slides`,
`--region`, `--slide`, the API): by its path, or by its bare file name when no other
indexed slide has that name. A path with folders names only the slide indexed at that
path: `remove b /elsewhere/a.svs` never removes the `a.svs` indexed from another folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cbir.errors import CbirError
from cbir.storage.metadata import SlideRecord


def lookup_slide(
    records: Sequence[SlideRecord],
    name: str,
    bundle: object,
    *,
    error: type[CbirError] = CbirError,
    files: bool = False,
) -> SlideRecord | None:
    """The record of the slide `name` gives: the indexed slide at that path, else (a bare
    file name only) the one of that file name. With `files`, an existing file or folder
    that is not an indexed path is a slide to read, not a name: None. Raises `error` in
    one line when the name is unknown (naming up to 10 indexed slides) or several slides
    have it."""
    given = Path(name)
    resolved = str(given.resolve())
    for r in records:
        if r.info.path == resolved:
            return r
    if files and given.exists():
        return None
    if len(given.parts) > 1:  # a path, not a name: only an indexed path matches it
        same = [r.info.path for r in records if r.info.name == given.name]
        hint = f" (indexed from {', '.join(same)})" if same else ""
        missing = "no such file, and not" if files else "not"
        raise error(f"{name}: {missing} the path of a slide of {bundle}{hint}")
    by_name = [r for r in records if r.info.name == name]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        paths = ", ".join(r.info.path for r in by_name)
        raise error(f"{name}: several slides in {bundle} have this name ({paths}); give the path")
    known = ", ".join(sorted(r.info.name for r in records)[:10])
    more = ", ..." if len(records) > 10 else ""
    missing = "no such file, and not" if files else "not"
    raise error(f"{name}: {missing} a slide of {bundle} (it has {known or 'none'}{more})")


def find_slide(
    records: Sequence[SlideRecord], name: str, bundle: object, error: type[CbirError] = CbirError
) -> SlideRecord:
    """The indexed slide given by its path or its unique file name (`lookup_slide`)."""
    record = lookup_slide(records, name, bundle, error=error)
    assert record is not None  # without `files`, a name is found or refused
    return record
