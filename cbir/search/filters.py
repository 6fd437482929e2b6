"""What a search keeps and what it says about it: the slides it may return (`--slides`,
`--exclude-query-slide`), hits below `--min-similarity` dropped, the slides' labels and
the majority vote attached, and how many tiles there were when fewer than k came back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cbir.errors import QueryError
from cbir.search.collection import Collection
from cbir.search.hits import SearchResult
from cbir.search.query import Region


def slide_filter(
    col: Collection, region: Region | None, slides: Sequence[str] | None, exclude_query_slide: bool
) -> set[int] | None:
    """Slide ids a search may return (None: every slide): `slides` by path or file name,
    less the query `region`'s own slide with `exclude_query_slide` (an image query has no
    region: then that is an error)."""
    if slides is None and not exclude_query_slide:
        return None
    keep = named_slide_ids(col, slides)
    if exclude_query_slide:
        if region is None:
            raise QueryError(
                "--exclude-query-slide needs a region query (SLIDE:x,y,w,h@MAGx); "
                "the query is an image"
            )
        keep -= own_slide_ids(col, region.slide)
        if not keep:
            raise QueryError(
                f"{region}: nothing to search: the only slides left are the query's own"
            )
    return keep


def named_slide_ids(col: Collection, slides: Sequence[str] | None) -> set[int]:
    """Ids of the slides named (by path or unique file name; None: every slide)."""
    from cbir.storage.slide_names import find_slide

    if slides is None:
        return set(col.slides)
    records = list(col.slides.values())
    return {find_slide(records, s, col.bundle.root, QueryError).slide_id for s in slides}


def own_slide_ids(col: Collection, path: str) -> set[int]:
    """Ids of the indexed slides that are the file `path`: same path or same checksum."""
    from cbir.slides.open import file_checksum

    p = Path(path)
    ids = {r.slide_id for r in col.slides.values() if r.info.path == str(p.resolve())}
    if not ids and p.is_file():
        checksum = file_checksum(p)
        ids = {r.slide_id for r in col.slides.values() if r.checksum == checksum}
    return ids


def tiles_at(col: Collection, magnifications: Sequence[float], slide_ids: set[int] | None) -> int:
    """Indexed tiles at these magnifications of these slides (None: every slide)."""
    ids = col.slides if slide_ids is None else slide_ids
    if set(magnifications) >= set(col.magnifications):
        return sum(col.slides[s].tiles for s in ids)
    grids = (col.grids.get(s, m) for s in ids for m in magnifications)
    return sum(int(g.valid.sum()) for g in grids if g is not None)


def above_min_similarity(
    result: SearchResult, k: int, min_similarity: float | None
) -> SearchResult:
    """Drop hits below `min_similarity` (ranks renumbered); record k and what fell."""
    hits = result.hits
    if min_similarity is not None:
        hits = [h for h in hits if (h.similarity or 0.0) >= min_similarity]
        hits = [h.model_copy(update={"rank": i}) for i, h in enumerate(hits, 1)]
    return result.model_copy(
        update={
            "hits": hits,
            "k": k,
            "min_similarity": min_similarity,
            "below_min_similarity": len(result.hits) - len(hits),
        }
    )


def finished(
    col: Collection,
    result: SearchResult,
    k: int,
    min_similarity: float | None,
    keep: set[int] | None,
    exclude_query_slide: bool,
    vote: str | None,
) -> SearchResult:
    """Drop weak hits; attach the slides' labels, the filters and the vote."""
    from cbir.search.hits import majority_vote
    from cbir.storage.labels import check_key

    result = above_min_similarity(result, k, min_similarity)
    hits = result.hits
    if any(r.labels for r in col.slides.values()):
        hits = [h.model_copy(update={"labels": col.slides[h.slide_id].labels}) for h in hits]
    update: dict[str, object] = {"hits": hits, "exclude_query_slide": exclude_query_slide}
    if keep is not None:
        update["slides"] = sorted(col.slides[s].info.name for s in keep)
    if vote is not None:
        update["vote"] = majority_vote(hits, check_key(vote))
    if len(hits) < k:  # say why: how many tiles there were to find
        update["searched_tiles"] = tiles_at(col, result.searched_magnifications, keep)
    return result.model_copy(update=update)
