"""`cbir search`: one query, or a batch (a folder of images, a CSV of slide regions), with
filters, a label vote and exports. Heavy imports happen inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import DeviceOpt, IndexArg, KOpt
from cbir.cli.search_batch import export_lines, infos, print_result, region_of, run_batch, summary
from cbir.cli.search_slide import run_slide_query
from cbir.search.batch import BatchItem, csv_queries, folder_queries

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.search.hits import SearchResult
    from cbir.search.query import Region


def _split_slides(slides: str | None) -> list[str] | None:
    from cbir.errors import QueryError

    if slides is None:
        return None
    names = [s.strip() for s in slides.split(",") if s.strip()]
    if not names:
        raise QueryError("--slides: give slide names or paths, e.g. a.svs,b.svs")
    return names


def search_cmd(
    index: IndexArg,
    query: Annotated[
        Path | None,
        typer.Argument(
            help="Query image (one tile or larger: larger is a region query), a folder of "
            "query images, or a CSV of regions with a header slide,x,y,w,h,magnification.",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Region of a slide: SLIDE:x,y,w,h[@MAGx], level-0 pixels; SLIDE a path or "
            "an indexed slide's file name; without @MAGx the highest magnification indexed "
            "for it at which the region covers a tile."
        ),
    ] = None,
    slide: Annotated[
        str | None,
        typer.Option(
            "--slide",
            help="A whole slide as the query: a slide file, a DICOM folder, or an indexed "
            "slide's name; answers the most similar slides, each with its matched tile "
            "pairs.",
        ),
    ] = None,
    k: KOpt = None,
    scale: Annotated[str, typer.Option(help="Magnifications to search: all, or one: 20x.")] = "all",
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Rank by local-feature RANSAC inliers (bundles with local features; "
            "default: the recipe's).",
        ),
    ] = None,
    allow_background: Annotated[
        bool,
        typer.Option(
            "--allow-background/--no-allow-background",
            help="Search a query refused by default: no tissue, or not brightfield "
            "tissue (noise, blur, pen ink, a dark or inverted image).",
        ),
    ] = False,
    min_similarity: Annotated[
        float | None,
        typer.Option(
            "--min-similarity",
            min=0.0,
            max=1.0,
            help="Drop hits with a similarity (0..1) below this; fewer than k may remain.",
        ),
    ] = None,
    expand: Annotated[
        int | None,
        typer.Option(
            "--expand",
            min=0,
            help="Query expansion of tile queries: search again with the query plus its N "
            "nearest tiles (unit-vector recipes; default: the recipe's; 0: off).",
        ),
    ] = None,
    slides: Annotated[
        str | None,
        typer.Option(
            "--slides",
            help="Search only these slides: comma-separated file names or paths "
            "(cbir info lists them).",
        ),
    ] = None,
    exclude_query_slide: Annotated[
        bool,
        typer.Option(
            "--exclude-query-slide/--no-exclude-query-slide",
            help="Region queries: drop hits on the query's own slide (k hits still come "
            "back when other slides have them).",
        ),
    ] = False,
    case_label: Annotated[
        str | None,
        typer.Option(
            "--case-label",
            metavar="KEY",
            help="Slide queries with --exclude-query-slide: also drop the slides that share "
            "the query's value of this label (the other slides of its case).",
        ),
    ] = None,
    slide_ranking: Annotated[
        str,
        typer.Option(
            "--slide-ranking",
            help="Slide queries: pooled (cosine of mean-pooled codes), or median / mosaic "
            "(then median-of-minimum to every tile / the mosaic tiles of the first 100 "
            "slides).",
        ),
    ] = "pooled",
    vote: Annotated[
        str | None,
        typer.Option(
            "--vote",
            metavar="KEY",
            help="Add the majority vote of the hits' values of this slide label (cbir label), "
            "the mMV@k decision.",
        ),
    ] = None,
    orientations: Annotated[
        bool,
        typer.Option(
            "--orientations/--no-orientations",
            help="Also search the query flipped and turned (8 orientations, about 8x the "
            "query time); each hit says the orientation that matched.",
        ),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="DIR",
            help="Write the query and hit crops (PNG), a montage, an HTML report and QuPath "
            "GeoJSON per slide into DIR (absent, empty, or a previous export).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object on stdout; a batch prints one per query (JSON Lines).",
        ),
    ] = False,
) -> None:
    """Search a bundle with an image, a slide region, a folder of images or a CSV of regions.

    A batch shows a progress bar on stderr and ends with a summary; a query that
    fails gets one line on stderr, the others still run, and the exit code is then 1."""
    import json

    from cbir.api import open_index
    from cbir.cli.errors import one_line
    from cbir.cli.render import note_readonly
    from cbir.errors import CbirError, QueryError
    from cbir.export.staging import check_target
    from cbir.search.filters import slide_filter
    from cbir.search.query import Region
    from cbir.storage.labels import check_key

    names = _split_slides(slides)
    if vote is not None:
        check_key(vote)
    if slide is not None:
        _check_slide_options(
            query, region, scale, verify, min_similarity, orientations, export,
            allow_background, expand,
        )  # fmt: skip
        with open_index(index, device=device) as ix:
            note_readonly(ix)
            run_slide_query(
                ix,
                slide,
                json_out,
                k=k,
                method=slide_ranking,
                slides=names,
                exclude_query_slide=exclude_query_slide,
                case_label=case_label,
                vote=vote,
            )
        return
    if case_label is not None:
        raise QueryError("--case-label is for slide queries (--slide)")
    if query is None and region is None:
        raise QueryError(
            "nothing to search for: give a query (an image, a folder of images or a CSV of "
            "regions) or --region SLIDE:x,y,w,h@MAGx"
        )
    if query is not None and region is not None:
        raise QueryError("give either a query (image, folder or CSV) or --region, not both")
    if export is not None:
        check_target(export)
    batch: list[BatchItem] | None = None
    if query is not None and query.is_dir():
        if exclude_query_slide:
            raise QueryError(
                f"{query}: --exclude-query-slide needs region queries (a CSV of regions), "
                "not a folder of images"
            )
        batch = folder_queries(query)
    elif query is not None and query.suffix.lower() == ".csv" and query.is_file():
        batch = csv_queries(query)
    options = {
        "k": k,
        "scale": scale,
        "verify": verify,
        "allow_background": allow_background,
        "min_similarity": min_similarity,
        "expand": expand,
        "slides": names,
        "exclude_query_slide": exclude_query_slide,
        "vote": vote,
        "orientations": orientations,
    }
    with open_index(index, device=device) as ix:
        note_readonly(ix)
        if batch is None:
            try:
                if names is not None:
                    slide_filter(ix.collection, None, names, False)
                single = Region.parse(region) if region is not None else query
                assert single is not None
                result = ix.search(single, **options)  # type: ignore[arg-type]
            except CbirError as exc:  # a refused query: its reason as JSON too, exit 2
                if json_out:
                    shown = region if region is not None else str(query)
                    typer.echo(json.dumps({"query": shown, "error": one_line(str(exc))}))
                raise
            print_result(result, json_out)
            if export is not None:
                _export_one(ix, single, result, export, json_out)
            return
        if names is not None:
            slide_filter(ix.collection, None, names, False)  # unknown: one line, first
        failed = run_batch(ix, batch, options, export, json_out)
    summary(len(batch), failed, json_out)
    if failed:
        raise typer.Exit(1)


def _export_one(
    ix: Index, query: Path | Region | str, result: SearchResult, out: Path, json_out: bool
) -> None:
    from cbir.export import export_result

    image, _ = ix.query_image(query)
    report = export_result(result, image, out, infos(ix), region_of(ix, query))
    export_lines(report.missing, f"exported to {out}", json_out)


def _check_slide_options(
    query: Path | None,
    region: str | None,
    scale: str,
    verify: bool | None,
    min_similarity: float | None,
    orientations: bool,
    export: Path | None,
    allow_background: bool = False,
    expand: int | None = None,
) -> None:
    """A slide query takes none of the patch queries' own options."""
    from cbir.errors import QueryError

    if query is not None or region is not None:
        raise QueryError("give one query: an image, --region or --slide")
    given = {
        "--scale": scale != "all",
        "--verify": bool(verify),
        "--min-similarity": min_similarity is not None,
        "--orientations": orientations,
        "--export": export is not None,
        "--allow-background": allow_background,
        "--expand": expand is not None,
    }
    if any(given.values()):
        names = ", ".join(n for n, on in given.items() if on)
        raise QueryError(f"{names}: not for slide queries (--slide)")


def register(app: typer.Typer) -> None:
    """Add `cbir search` to the CLI."""
    app.command("search")(cli_errors(search_cmd))
