"""Slide labels: `key=value` pairs stored in a bundle's slide records (`cbir label`),
carried by hits, and the majority vote of the top-k hits' values of one key (mMV@k)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

from cbir.errors import CbirError
from cbir.files import one_or_many
from cbir.storage.metadata import SlideRecord
from cbir.storage.slide_names import find_slide

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

    if any(v is None for v in labels.values()):
        raise LabelError("a label value of None: give a text, or unset the key")
    labels = {check_key(k): str(v) for k, v in labels.items()}
    unset = one_or_many(unset)
    for key in unset:
        check_key(key)
    with transaction(bundle, create=False) as writer:
        assert writer.live is not None and writer.previous is not None
        record = find_slide(writer.live.meta.slide_list(), slide, bundle, LabelError)
        merged = {k: v for k, v in record.labels.items() if k not in set(unset)}
        merged.update(labels)
        record = record.model_copy(update={"labels": dict(sorted(merged.items()))})
        if record.labels:
            writer.labels[record.slide_id] = record.labels
        else:
            writer.labels.pop(record.slide_id, None)
        writer.commit(writer.previous.recipe)
    return record
