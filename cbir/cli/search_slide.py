"""`cbir search IDX --slide SLIDE`: the slides most like a whole slide, as a table (each
with the tile pair that matched best) or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.search.slide_hits import SlideSearchResult


def show_slide_hits(result: SlideSearchResult) -> None:
    """Ranked slides on stdout, then the filters and the vote."""
    from rich.text import Text

    from cbir.cli.render import (
        DISTANCE_UNITS,
        add_number_column,
        add_text_column,
        line,
        show_extras,
        stdout,
        table,
    )
    from cbir.cli.words import plural

    how = {
        "pooled": "mean-pooled cosine",
        "median": "median-of-minimum to every tile",
        "mosaic": "median-of-minimum to mosaic tiles",
    }.get(result.method, result.method)
    line(
        f"slide query {result.query}: mosaic of {plural(result.query_tiles, 'tile')} at "
        f"{result.magnification:g}x, slides ranked by {how}"
    )
    t = table(f"{result.query} (slide query, {result.seconds * 1e3:.1f} ms)")
    add_number_column(t, "rank")
    add_text_column(t, "slide")
    unit = DISTANCE_UNITS.get(result.distance_kind, "distance")
    add_number_column(t, "distance" if result.method == "pooled" else f"median {unit}")
    add_number_column(t, "similarity")
    add_text_column(t, "best pair (query x,y -> hit x,y)")
    for h in result.hits:
        pair = h.pairs[0] if h.pairs else None
        shown = f"{pair.query[0]},{pair.query[1]} -> {pair.hit[0]},{pair.hit[1]}" if pair else ""
        t.add_row(str(h.rank), Text(h.slide), f"{h.distance:.4g}", f"{h.similarity:.3f}", shown)
    stdout.print(t)
    if result.other_magnification:
        line(
            f"{plural(result.other_magnification, 'slide')} not compared: no tile at "
            f"{result.magnification:g}x"
        )
    show_extras(result)  # type: ignore[arg-type]


def run_slide_query(ix: Index, slide: str, json_out: bool, **options: object) -> None:
    """Search `ix` with a slide; print the result (a refused query: JSON too, exit 2)."""
    import json

    from cbir.errors import CbirError

    try:
        result = ix.search_slide(slide, **options)  # type: ignore[arg-type]
    except CbirError as exc:
        if json_out:
            typer.echo(json.dumps({"query": slide, "error": str(exc)}))
        raise
    if json_out:
        typer.echo(result.model_dump_json())
    else:
        show_slide_hits(result)
