"""What a build, add or remove did: the report the API returns and the CLI prints."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from pydantic import BaseModel

from cbir.describe import SkippedSlide
from cbir.storage.manifest import Manifest
from cbir.storage.store import SlideSummary
from cbir.timing import StageTimer


class IndexReport(BaseModel):
    """What a build or add did, with stage timings (seconds)."""

    bundle: str
    recipe: str
    added: list[SlideSummary]
    replaced: list[str]
    removed: list[str]
    slides_total: int
    tiles_total: int
    index_kind: str
    seconds: float
    stage_seconds: dict[str, float]
    skipped: list[SkippedSlide] = []  # slides left out (no tissue; unreadable), with why
    same_content: list[str] = []  # an added slide whose file another indexed one has


def same_content(added: Sequence[SlideSummary], indexed: dict[str, str]) -> list[str]:
    """One line per added slide whose file content (`checksum`: size and ends) is that
    of a slide indexed before (`indexed`: checksum -> path) or added earlier in the call."""
    seen, lines = dict(indexed), []
    for s in added:
        first = seen.setdefault(s.checksum, s.path) if s.checksum else s.path
        if first != s.path:
            lines.append(
                f"{s.path}: the same file as {first}, indexed too (`cbir add --replace` "
                "re-indexes a slide in place; `cbir remove` drops a copy)"
            )
    return lines


def index_report(
    out: str | os.PathLike[str],
    manifest: Manifest,
    added: list[SlideSummary],
    replaced: list[str],
    removed: list[str],
    start: float,
    timer: StageTimer,
    skipped: list[SkippedSlide] | None = None,
    indexed: dict[str, str] | None = None,
) -> IndexReport:
    """The report of a build, add or remove that published `manifest`; `indexed`: checksum
    -> path of the slides the bundle had before (for same_content)."""
    return IndexReport(
        bundle=str(out),
        recipe=manifest.recipe.name,
        added=added,
        replaced=replaced,
        removed=removed,
        slides_total=manifest.counts.slides,
        tiles_total=manifest.counts.tiles,
        index_kind=manifest.index_kind,
        seconds=round(time.perf_counter() - start, 4),
        stage_seconds=timer.as_dict(),
        skipped=list(skipped or []),
        same_content=same_content(added, indexed or {}),
    )
