"""A slide as the query: resolve it, leave out its own slide and its case when asked,
rank the slides (cbir.search.slide_rank), attach labels and the vote."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from cbir.errors import QueryError
from cbir.search.collection import Collection
from cbir.search.filters import named_slide_ids, own_slide_ids
from cbir.search.slide_hits import SlideSearchResult
from cbir.search.slide_query import file_query, indexed_query, resolve_query_slide
from cbir.search.slide_rank import (
    DEFAULT_METHOD,
    METHODS,
    SLIDE_CANDIDATES,
    QueryMosaic,
    rank_slides,
)


def _kept(
    col: Collection,
    q: QueryMosaic,
    path: Path | None,
    slides: Sequence[str] | None,
    exclude_query_slide: bool,
    case_label: str | None,
) -> tuple[set[int] | None, set[int]]:
    """The slides a slide query may return (None: every slide), and those of them left
    out as the query's own (its slide, and with `case_label` its case's)."""
    from cbir.storage.labels import check_key

    if slides is None and not exclude_query_slide:
        return None, set()
    keep = named_slide_ids(col, slides)
    own: set[int] = set()
    if exclude_query_slide:
        own = {q.slide_id} if q.slide_id is not None else set()
        if path is not None:
            own |= own_slide_ids(col, str(path))
        if case_label is not None:
            key = check_key(case_label)
            cases = {col.slides[s].labels.get(key) for s in own} - {None}
            own |= {r.slide_id for r in col.slides.values() if r.labels.get(key) in cases}
        own &= keep
        keep -= own
    return keep, own


def search_slide(
    col: Collection,
    slide: str | int,
    k: int,
    min_tissue: float,
    *,
    method: str = DEFAULT_METHOD,
    candidates: int = SLIDE_CANDIDATES,
    slides: Sequence[str] | None = None,
    exclude_query_slide: bool = False,
    case_label: str | None = None,
    vote: str | None = None,
) -> SlideSearchResult:
    """The top-k slides like `slide` (an indexed slide's id, name or path, or a slide
    file)."""
    from cbir.search.hits import majority_vote
    from cbir.storage.labels import check_key

    start = time.perf_counter()
    if k < 1:
        raise QueryError(f"k must be >= 1, got {k}")
    if method not in METHODS:
        raise QueryError(f"slide ranking {method!r} is unknown; one of: {', '.join(METHODS)}")
    if case_label is not None and not exclude_query_slide:
        raise QueryError("a case label leaves out the query's case: it needs --exclude-query-slide")
    found = resolve_query_slide(col, slide)
    path = found if isinstance(found, Path) else None
    q = file_query(col, found, min_tissue) if path is not None else indexed_query(col, found)
    keep, own = _kept(col, q, path, slides, exclude_query_slide, case_label)
    if keep is not None and not keep:
        raise QueryError(f"{slide}: nothing to search: the only slides left are the query's own")
    hits, ranked, other = rank_slides(col, q, k, keep, method, candidates)
    if any(r.labels for r in col.slides.values()):
        hits = [h.model_copy(update={"labels": col.slides[h.slide_id].labels}) for h in hits]
    return SlideSearchResult(
        query=q.name,
        query_slide_id=q.slide_id,
        query_tiles=len(q.codes),
        magnification=q.magnification,
        method=method,
        candidates=ranked,
        hits=hits,
        seconds=round(time.perf_counter() - start, 6),
        k=k,
        distance_kind=col.code_similarity.kind,
        slides=None if keep is None else sorted(col.slides[s].info.name for s in keep),
        exclude_query_slide=bool(own),  # slides were left out as the query's own
        case_label=case_label,
        other_magnification=other,
        vote=majority_vote(hits, check_key(vote)) if vote is not None else None,  # type: ignore[arg-type]
    )
