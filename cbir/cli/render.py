"""Human-readable output (rich) and the stderr console for logs and progress."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cbir.api import IndexInfo
from cbir.eval import EvalReport
from cbir.hits import SearchResult
from cbir.indexer import IndexReport
from cbir.nn.verdict import Verdict

stdout = Console()
stderr = Console(stderr=True)


def setup_logging() -> None:
    logging.basicConfig(
        format="cbir: %(levelname)s: %(message)s", level=logging.WARNING, force=True
    )


class RichProgress:
    """`cbir.progress.Progress` drawn as a rich bar on stderr, one bar per slide."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tiles"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self.task: int | None = None
        self.started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.bar.stop()

    def start(self, label: str, total: int) -> None:
        if not self.started:  # draw nothing until there is work to show
            self.bar.start()
            self.started = True
        self.task = self.bar.add_task(label, total=total)

    def advance(self, steps: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, steps)


def show_report(report: IndexReport) -> None:
    for s in report.added:
        per_mag = ", ".join(f"{m} {n}" for m, n in s.tiles_per_magnification.items())
        stdout.print(
            f"indexed {s.name}: {s.tiles} tiles at base {s.base_magnification:g}x "
            f"({s.magnification_source}) [{per_mag}]"
        )
    for p in report.replaced:
        stdout.print(f"replaced {p} (it was already in the bundle; re-indexed)")
    for p in report.removed:
        stdout.print(f"removed {p}")
    stdout.print(
        f"{report.bundle}: {report.slides_total} slides, {report.tiles_total} tiles, "
        f"{report.index_kind} index, recipe {report.recipe} ({report.seconds:.2f} s)"
    )


def show_hits(result: SearchResult) -> None:
    kind = (
        "tile"
        if result.query_rows * result.query_cols == 1
        else (f"{result.query_rows} x {result.query_cols} tile region")
    )
    if result.scale != "all":
        searched = ", ".join(f"{m:g}x" for m in result.searched_magnifications)
        probs = ""
        if result.scale_probabilities:
            probs = (
                " (P(same scale): "
                + ", ".join(f"{m} {p:.2f}" for m, p in result.scale_probabilities.items())
                + ")"
            )
        stdout.print(f"--scale {result.scale}: searched {searched}{probs}")
    verified = " verified," if result.verified else ""
    table = Table(title=f"{result.query} ({kind} query,{verified} {result.seconds * 1e3:.1f} ms)")
    cols = ["rank", "slide", "mag", "x", "y", "w", "h", "distance", "similarity"]
    for col in cols + (["inliers"] if result.verified else []):
        table.add_column(col, justify="left" if col == "slide" else "right")
    for h in result.hits:
        row = [
            str(h.rank),
            h.slide,
            f"{h.magnification:g}x",
            str(h.x),
            str(h.y),
            str(h.w),
            str(h.h),
            f"{h.distance:g}",
            "" if h.similarity is None else f"{h.similarity:.3f}",
        ]
        table.add_row(*row, *([str(h.inliers)] if result.verified else []))
    stdout.print(table)
    if result.below_min_similarity:
        stdout.print(
            f"{len(result.hits)} of {result.k} hits: {result.below_min_similarity} below "
            f"--min-similarity {result.min_similarity:g}"
        )
    elif not result.hits:
        stdout.print("no hits")
    elif result.k is not None and len(result.hits) < result.k:
        stdout.print(f"{len(result.hits)} of {result.k} hits: the bundle has no more")


def show_info(info: IndexInfo) -> None:
    stdout.print(
        f"{info.path}: recipe {info.recipe} ({info.descriptor} -> {info.encoder} "
        f"{info.bits} bits), {info.index_kind} index"
        + (f" nlist {info.nlist} nprobe {info.nprobe}" if info.nlist else "")
        + f", {len(info.slides)} slides, {info.tiles} tiles, "
        + (f"{info.local_features} local features, " if info.local_features is not None else "")
        + f"{info.bytes_on_disk / 1e6:.2f} MB, generation {info.generation}"
    )
    if info.bit_statistics:
        st = info.bit_statistics
        stdout.print(
            f"codes: bit balance {st['bit_balance']:.3f} (0 is ideal), mean |bit "
            f"correlation| {st['bit_correlation']:.3f}, constant bits "
            f"{int(st['constant_bits'])}"
        )
    table = Table()
    for col in ("id", "slide", "base", "magnifications", "tiles", "path"):
        table.add_column(col)
    for s in info.slides:
        table.add_row(
            str(s.slide_id),
            s.name,
            f"{s.base_magnification:g}x ({s.magnification_source})",
            ", ".join(f"{m:g}" for m in s.magnifications),
            str(s.tiles),
            s.path,
        )
    stdout.print(table)


def show_eval(report: EvalReport) -> None:
    table = Table(
        title=f"{report.recipe}: {report.tiles} tiles, {report.classes} classes ({report.protocol})"
    )
    cols = (
        "seed_map_at_10",
        "map_at_10",
        "precision_at_5",
        "precision_at_10",
        "majority_vote_at_5",
        "queries",
    )
    table.add_column("class")
    for c in cols:
        table.add_column(c.replace("_at_", "@"), justify="right")

    def row(name: str, m: object) -> list[str]:
        return [name] + [
            f"{getattr(m, c):.3f}" if c != "queries" else str(m.queries)  # type: ignore[attr-defined]
            for c in cols
        ]

    for name, m in report.per_class.items():
        table.add_row(*row(name, m))
    table.add_row(*row("mean (classes)", report.mean))
    table.add_row(*row("mean (queries)", report.micro))
    stdout.print(table)


def show_verdict(verdict: Verdict) -> None:
    """The training verdict on stderr (stdout stays for --json): a warning when the run
    did not learn."""
    if verdict.learned:
        stderr.print("training verdict: learned")
    else:
        stderr.print(f"warning: training verdict: {verdict.line}", style="bold yellow")
