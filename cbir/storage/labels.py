"""Slide labels: `key=value` pairs stored in a bundle's slide records (`cbir label`),
carried by hits, and the majority vote of the top-k hits' values of one key (mMV@k)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cbir.errors import CbirError
from cbir.storage.metadata import SlideRecord

#: A label key: letters, digits, `_`, `.`, `-` (no `=`, `,` or spaces), e.g. `diagnosis`.
LABEL_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class LabelError(CbirError):
    """A label is malformed, or names a slide the bundle does not have."""


def check_key(key: str) -> str:
    if not LABEL_KEY.match(key):
        raise LabelError(
            f"label key {key!r}: use letters, digits, '_', '.' or '-' (e.g. diagnosis)"
        )
    return key


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """`["diagnosis=LUAD", "case=TCGA-05-4244"]` -> {"diagnosis": "LUAD", ...}; the value
    is everything after the first `=` (surrounding spaces stripped)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise LabelError(f"label {item!r}: expected key=value, e.g. diagnosis=LUAD")
        check_key(key)
        if not value:
            raise LabelError(f"label {item!r} has no value (--unset {key} removes a label)")
        out[key] = value
    return out


def find_slide(records: Sequence[SlideRecord], name: str, bundle: object) -> SlideRecord:
    """The slide given by its path or its file name (which must then be unique)."""
    resolved = str(Path(name).resolve())
    for r in records:
        if r.info.path == resolved:
            return r
    by_name = [r for r in records if r.info.name in (name, Path(name).name)]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        paths = ", ".join(r.info.path for r in by_name)
        raise LabelError(
            f"{name}: several slides in {bundle} have this name ({paths}); give the path"
        )
    known = ", ".join(sorted(r.info.name for r in records)[:10])
    more = ", ..." if len(records) > 10 else ""
    raise LabelError(f"{name}: not a slide of {bundle} (it has {known or 'none'}{more})")


def label_slide(
    bundle: str | os.PathLike[str],
    slide: str,
    labels: Mapping[str, str],
    unset: Sequence[str] = (),
) -> SlideRecord:
    """Set (and `unset`) labels of one slide of a bundle, atomically: like add and remove,
    the labels are written into a new manifest, which replaces the old one atomically.
    Returns the slide's record as published."""
    from cbir.storage.writer import transaction

    labels = {check_key(k): str(v) for k, v in labels.items()}
    for key in unset:
        check_key(key)
    with transaction(bundle, create=False) as writer:
        assert writer.live is not None and writer.previous is not None
        record = find_slide(writer.live.meta.slide_list(), slide, bundle)
        merged = {k: v for k, v in record.labels.items() if k not in set(unset)}
        merged.update(labels)
        record = record.model_copy(update={"labels": dict(sorted(merged.items()))})
        if record.labels:
            writer.labels[record.slide_id] = record.labels
        else:
            writer.labels.pop(record.slide_id, None)
        writer.commit(writer.previous.recipe)
    return record
