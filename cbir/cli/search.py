"""`cbir search`: one query, or a batch (a folder of images, a CSV of slide regions), with
filters, a label vote and exports. Heavy imports happen inside the command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cbir.cli.errors import cli_errors
from cbir.cli.options import DeviceOpt, IndexArg, KOpt
from cbir.search.batch import BatchItem, csv_queries, folder_queries

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.search.hits import SearchResult
    from cbir.search.query import Region
    from cbir.slides import SlideInfo


def _split_slides(slides: str | None) -> list[str] | None:
    from cbir.errors import QueryError

    if slides is None:
        return None
    names = [s.strip() for s in slides.split(",") if s.strip()]
    if not names:
        raise QueryError("--slides: give slide names or paths, e.g. a.svs,b.svs")
    return names


def _message(source: str, exc: Exception) -> str:
    """An error line naming the query (once)."""
    text = str(exc)
    return text if text.startswith(source) else f"{source}: {text}"


class _Progress:
    """A transient rich bar of queries on stderr (stdout stays for results)."""

    def __init__(self, total: int, json_out: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from cbir.cli.render import stderr

        tty = sys.stdout.isatty() and not json_out  # tables print above the bar
        self.bar = Progress(
            TextColumn("searching"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("queries {task.fields[failed]}"),
            console=stderr,
            transient=True,
            redirect_stdout=tty,
            redirect_stderr=False,
        )
        self.task = self.bar.add_task("search", total=total, failed="")
        self.failed = 0

    def __enter__(self) -> _Progress:
        if self.bar.console.is_terminal:  # nothing to draw into a pipe or a file
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar.live.is_started:
            self.bar.stop()

    def error(self, line: str) -> None:
        from cbir.cli.render import plain

        self.failed += 1
        plain(self.bar.console, f"cbir: error: {line}")
        self.bar.update(self.task, failed=f"({self.failed} failed)")

    def advance(self) -> None:
        self.bar.advance(self.task)


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
    from cbir.cli.render import note_readonly
    from cbir.errors import QueryError
    from cbir.export.staging import check_target
    from cbir.search.filters import slide_filter
    from cbir.search.query import Region
    from cbir.storage.labels import check_key

    if query is None and region is None:
        raise QueryError(
            "nothing to search for: give a query (an image, a folder of images or a CSV of "
            "regions) or --region SLIDE:x,y,w,h@MAGx"
        )
    if query is not None and region is not None:
        raise QueryError("give either a query (image, folder or CSV) or --region, not both")
    names = _split_slides(slides)
    if vote is not None:
        check_key(vote)
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
        if names is not None:
            slide_filter(ix.collection, None, names, False)  # unknown: one line, first
        if batch is None:
            single = Region.parse(region) if region is not None else query
            assert single is not None
            try:
                result = ix.search(single, **options)  # type: ignore[arg-type]
            except QueryError as exc:  # a refused query: its reason as JSON too, exit 2
                if json_out:
                    typer.echo(json.dumps({"query": str(single), "error": str(exc)}))
                raise
            _print_result(result, json_out)
            if export is not None:
                _export_one(ix, single, result, export, json_out)
            return
        failed = _run_batch(ix, batch, options, export, json_out)
    _summary(len(batch), failed, json_out)
    if failed:
        raise typer.Exit(1)


def _print_result(result: SearchResult, json_out: bool) -> None:
    from cbir.cli.render import show_extras, show_hits

    if json_out:
        typer.echo(result.model_dump_json())
    else:
        show_hits(result)
        show_extras(result)


def _export_one(
    ix: Index, query: Path | Region | str, result: SearchResult, out: Path, json_out: bool
) -> None:
    from cbir.export import export_result

    image, _ = ix.query_image(query)
    report = export_result(result, image, out, _infos(ix), _region_of(ix, query))
    _export_lines(report.missing, f"exported to {out}", json_out)


def _export_lines(missing: list[str], done: str, json_out: bool) -> None:
    from cbir.cli.render import plain, stderr, stdout

    for line in missing:
        plain(stderr, f"cbir: warning: crop not written: {line}")
    plain(stderr if json_out else stdout, done)


def _infos(ix: Index) -> dict[int, SlideInfo]:
    """{slide id: SlideInfo} of a bundle's slides (base magnifications for crops)."""
    return {sid: r.info for sid, r in ix.slides.items()}


def _region_of(ix: Index, query: Path | Region | str) -> Region | None:
    from cbir.api import as_region

    region = as_region(query)  # resolved: its slide's path and its magnification
    return ix.resolve_region(region) if region is not None else None


def _run_batch(
    ix: Index,
    batch: list[BatchItem],
    options: dict[str, object],
    export: Path | None,
    json_out: bool,
) -> list[str]:
    """Search every item; print each result (a JSON line, or a table); export each into
    DIR/<nnn>-<name>/ with a front page DIR/index.html. Returns the failed sources."""
    import contextlib
    import json

    from cbir.errors import CbirError

    failed: list[str] = []
    entries: list[tuple[str, str, str]] = []
    width = max(3, len(str(len(batch))))
    with contextlib.ExitStack() as stack:
        stage = None
        if export is not None:
            from cbir.export import staged_dir

            stage = stack.enter_context(staged_dir(export))
        progress = stack.enter_context(_Progress(len(batch), json_out))
        for i, item in enumerate(batch, 1):
            try:
                if item.query is None:
                    raise CbirError(item.error or "unreadable row")
                result = ix.search(item.query, **options)  # type: ignore[arg-type]
            except (CbirError, OSError) as exc:
                line = _message(item.source, exc)
                progress.error(line)
                failed.append(item.source)
                entries.append((item.source, "", f"failed: {exc}"))
                if json_out:
                    typer.echo(json.dumps({"query": item.source, "error": line}))
                progress.advance()
                continue
            _print_result(result, json_out)
            if stage is not None:
                entries.append(_export_item(ix, item, result, stage, i, width))
            progress.advance()
        if stage is not None:
            _write_batch_index(stage, entries, failed)
    if export is not None:
        _export_lines([], f"exported {len(batch) - len(failed)} results to {export}", json_out)
    return failed


def _export_item(
    ix: Index, item: BatchItem, result: SearchResult, stage: Path, i: int, width: int
) -> tuple[str, str, str]:
    from cbir.cli.render import plain, stderr
    from cbir.export import write_export
    from cbir.export.crops import safe_stem

    assert item.query is not None
    source = item.query if isinstance(item.query, Path) else Path(item.query.slide)
    name = f"{i:0{width}d}-{safe_stem(source.name)}"
    image, _ = ix.query_image(item.query)
    report = write_export(result, image, stage / name, _infos(ix), _region_of(ix, item.query))
    for line in report.missing:
        plain(stderr, f"cbir: warning: {item.source}: crop not written: {line}")
    top = result.hits[0] if result.hits else None
    outcome = (
        f"hit 1: {top.slide} {top.magnification:g}x, similarity {top.similarity:.3f}"
        if top is not None and top.similarity is not None
        else ("no hits" if top is None else f"hit 1: {top.slide}")
    )
    if result.vote is not None and result.vote.value is not None:
        outcome += f"; vote {result.vote.key}: {result.vote.value}"
    return item.source, f"{name}/report.html", outcome


def _write_batch_index(stage: Path, entries: list[tuple[str, str, str]], failed: list[str]) -> None:
    import json

    from cbir.export.report import index_html
    from cbir.export.staging import MARKER, MARKER_KEY

    (stage / "index.html").write_text(index_html(entries, f"cbir search: {len(entries)} queries"))
    marker = {
        MARKER_KEY: 1,
        "kind": "batch",
        "queries": [{"query": q, "report": r or None, "result": o} for q, r, o in entries],
        "failed": failed,
    }
    (stage / MARKER).write_text(json.dumps(marker, indent=1))


def _summary(total: int, failed: list[str], json_out: bool) -> None:
    from cbir.cli.render import plain, stderr, stdout

    line = f"searched {total} queries: {total - len(failed)} ok, {len(failed)} failed"
    if failed:
        shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
        line += f" ({shown})"
    plain(stderr if json_out else stdout, line)


def register(app: typer.Typer) -> None:
    """Add `cbir search` to the CLI."""
    app.command("search")(cli_errors(search_cmd))
