"""`cbir search` of many queries (a folder of images, a CSV of slide regions): a
progress bar, one result per query, one line per failed query, exports with a front
page, a summary; and what single queries share with it (printing, export lines)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cbir.search.batch import BatchItem

if TYPE_CHECKING:
    from cbir.api import Index
    from cbir.search.hits import SearchResult
    from cbir.search.query import Region
    from cbir.slides import SlideInfo


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


def print_result(result: SearchResult, json_out: bool) -> None:
    from cbir.cli.render import show_extras, show_hits

    if json_out:
        typer.echo(result.model_dump_json())
    else:
        show_hits(result)
        show_extras(result)


def export_lines(missing: list[str], done: str, json_out: bool) -> None:
    from cbir.cli.render import plain, stderr, stdout

    for line in missing:
        plain(stderr, f"cbir: warning: crop not written: {line}")
    plain(stderr if json_out else stdout, done)


def infos(ix: Index) -> dict[int, SlideInfo]:
    """{slide id: SlideInfo} of a bundle's slides (base magnifications for crops)."""
    return {sid: r.info for sid, r in ix.slides.items()}


def region_of(ix: Index, query: Path | Region | str) -> Region | None:
    from cbir.api import as_region

    region = as_region(query)  # resolved: its slide's path and its magnification
    return ix.resolve_region(region) if region is not None else None


def run_batch(
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
            print_result(result, json_out)
            if stage is not None:
                entries.append(_export_item(ix, item, result, stage, i, width))
            progress.advance()
        if stage is not None:
            _write_batch_index(stage, entries, failed)
    if export is not None:
        export_lines([], f"exported {len(batch) - len(failed)} results to {export}", json_out)
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
    report = write_export(result, image, stage / name, infos(ix), region_of(ix, item.query))
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


def summary(total: int, failed: list[str], json_out: bool) -> None:
    from cbir.cli.render import plain, stderr, stdout

    line = f"searched {total} queries: {total - len(failed)} ok, {len(failed)} failed"
    if failed:
        shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
        line += f" ({shown})"
    plain(stderr if json_out else stdout, line)
