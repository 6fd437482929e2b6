"""Typed errors. The CLI turns any `CbirError` into one line on stderr and exit code 2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class CbirError(Exception):
    """Base of every error cbir raises on purpose (bad input, bad bundle, bad name)."""


class SlideReadError(CbirError):
    """A slide or image file cannot be opened or read (missing, truncated, unsupported)."""


class EmptyTissueError(CbirError):
    """A slide has no tile with enough tissue to index."""


class QueryError(CbirError):
    """A query is malformed (smaller than a tile, bad region string, outside the slide)."""


class UnknownComponentError(CbirError):
    """A registry was asked for a name it does not have."""


class RecipeError(CbirError):
    """A recipe file is missing or invalid."""


class BundleError(CbirError):
    """An index bundle is missing, unreadable or inconsistent."""


class BundleMismatchError(BundleError):
    """A bundle was made with another recipe, component spec or format version."""


class DuplicateSlideError(CbirError):
    """A slide is already in the bundle and replacement was not asked for."""


def validation_line(exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """A pydantic ValidationError as one line, `where: problem; ...` (no URL, no input
    dump). `names` maps a field to what the user typed for it (e.g. {"stride":
    "--stride"}); other fields are named by their dotted location."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "value"
        if names and loc and loc[0] in names:
            where = " ".join([names[loc[0]], *loc[1:]])
        problem = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {problem}")
    return "; ".join(parts)
