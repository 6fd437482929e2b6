"""Search arguments from Python checked as the CLI and the HTTP API check theirs: each
wrong one is a QueryError of one line, before any work (a numpy `k` reached Faiss's
SWIG layer, a float `k` returned every region, a str of slide names was split into
letters)."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence

from cbir.errors import QueryError
from cbir.files import one_or_many


def whole(value: object, name: str, least: int) -> int:
    """An integral `value` (int, numpy integer) of at least `least` -> int."""
    if isinstance(value, bool):
        raise QueryError(f"{name} must be a whole number, not {value!r}")
    try:
        n = operator.index(value)  # type: ignore[call-overload]
    except TypeError:
        raise QueryError(f"{name} must be a whole number, not {value!r}") from None
    if n < least:
        raise QueryError(f"{name} must be >= {least}, got {n}")
    return n


def fraction(value: float | None, name: str) -> float | None:
    """None, or a finite number in [0, 1]."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be a number in [0, 1], not {value!r}") from None
    if not (math.isfinite(x) and 0.0 <= x <= 1.0):
        raise QueryError(f"{name} must be a number in [0, 1], not {value!r}")
    return x


def slide_names(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> list[str] | None:
    """A `slides` filter: None (every slide), one name or path, or several; an empty one
    keeps no slide and is refused."""
    if value is None:
        return None
    names = [str(v) for v in one_or_many(value)]
    if not names:
        raise QueryError("slides: an empty list keeps no slide (leave it out: every slide)")
    return names
