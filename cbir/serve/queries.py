"""What the server's search requests become: a region of an indexed slide (named by id,
never by path), the keyword arguments of `Index.search` and `Index.search_slide` from a
request's options."""

from __future__ import annotations

from typing import Any

from cbir.errors import QueryError
from cbir.serve.generation import Generation, SlideNotFound
from cbir.serve.schemas import RegionSearch, SearchOptions, SlideSearch


def region_query(gen: Generation, r: RegionSearch):  # type: ignore[no-untyped-def]
    """A region search's query (a `Region` of the slide's file) and the name shown for
    it (the slide's name, in its answer and its errors; hits and /info carry the indexed
    slides' paths, as `cbir search --json` does)."""
    from cbir.search.query import Region

    record = gen.index.slides.get(r.slide)
    if record is None:
        raise SlideNotFound(f"no slide {r.slide} in this bundle")
    mag = r.magnification
    if mag is None:
        mag = gen.index.region_magnification(record, r.w, r.h)
    region = Region(slide=record.info.path, x=r.x, y=r.y, w=r.w, h=r.h, magnification=mag)
    return region, str(region.model_copy(update={"slide": record.info.name}))


def search_kwargs(gen: Generation, o: SearchOptions) -> dict[str, Any]:
    """`Index.search` keyword arguments from the request's options."""
    kwargs: dict[str, Any] = {
        "k": o.k,
        "scale": o.scale,
        "verify": o.verify,
        "allow_background": o.allow_background,
        "min_similarity": o.min_similarity,
        "expand": o.expand,
    }
    if o.slides is not None:
        kwargs["slides"] = slide_ids_to_paths(gen, o.slides)
    return {
        **kwargs,
        "exclude_query_slide": o.exclude_query_slide,
        "vote": o.vote,
        "orientations": o.orientations,
    }


def slide_ids_to_paths(gen: Generation, ids: list[int] | None) -> list[str] | None:
    """The stored paths of slide ids (a `slides` filter); an unknown id is refused."""
    if ids is None:
        return None
    unknown = [s for s in ids if s not in gen.index.slides]
    if unknown:
        raise QueryError(f"slides: no slide {unknown[0]} in this bundle")
    return [gen.index.slides[s].info.path for s in ids]


def slide_search_kwargs(gen: Generation, body: SlideSearch) -> dict[str, Any]:
    """`Index.search_slide` arguments of a slide search (its query: an indexed slide id)."""
    if body.slide not in gen.index.slides:
        raise SlideNotFound(f"no slide {body.slide} in this bundle")
    return {
        "slide": body.slide,
        "k": body.k,
        "method": body.method,
        "slides": slide_ids_to_paths(gen, body.slides),
        "exclude_query_slide": body.exclude_query_slide,
        "case_label": body.case_label,
        "vote": body.vote,
    }
