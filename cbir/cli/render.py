"""Human-readable output (rich) and the stderr console for logs and progress."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cbir.cli.words import plural

if TYPE_CHECKING:  # light at run time: `cbir info` and errors import no model code
    from cbir.api import Index, IndexInfo
    from cbir.eval import EvalReport
    from cbir.eval.slides import SlideEvalReport, SlideMetricSet
    from cbir.indexer import IndexReport
    from cbir.nn.verdict import Verdict
    from cbir.search.hits import SearchResult

stdout = Console()
stderr = Console(stderr=True)


def plain(console: Console, text: str) -> None:
    """One line as given: no markup, colour guesses or wrapping at the console's width."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def show_extras(result: SearchResult) -> None:
    """Lines under the hits table: the slide filter and the label vote."""
    if result.slides is not None or result.exclude_query_slide:
        searched = ", ".join(result.slides or [])
        own = " (the query's own slide excluded)" if result.exclude_query_slide else ""
        plain(stdout, f"searched slides: {searched}{own}")
    v = result.vote
    if v is not None:
        if v.value is None:
            line = f"vote {v.key}: no hit has this label"
        else:
            others = ", ".join(f"{k} {n}" for k, n in v.counts.items() if k != v.value)
            line = f"vote {v.key} (top {v.of}): {v.value}, {v.count} of {v.hits} labelled hits" + (
                f"; {others}" if others else ""
            )
        plain(stdout, line)


def setup_logging() -> None:
    logging.basicConfig(
        format="cbir: %(levelname)s: %(message)s", level=logging.WARNING, force=True
    )


def show_report(report: IndexReport) -> None:
    for s in report.added:
        per_mag = ", ".join(f"{m} {n}" for m, n in s.tiles_per_magnification.items())
        line(
            f"indexed {s.name}: {plural(s.tiles, 'tile')} at base {s.base_magnification:g}x "
            f"({s.magnification_source}) [{per_mag}]"
        )
    for p in report.replaced:
        line(f"replaced {p} (it was already in the bundle; re-indexed)")
    for p in report.removed:
        line(f"removed {p}")
    line(
        f"{report.bundle}: {plural(report.slides_total, 'slide')}, "
        f"{plural(report.tiles_total, 'tile')}, "
        f"{report.index_kind} index, recipe {report.recipe} ({report.seconds:.2f} s)"
    )


#: Table header of Hit.distance per SearchResult.distance_kind: its unit.
DISTANCE_UNITS = {
    "hamming": "Hamming bits",
    "unit_l2": "squared L2",
    "l2": "squared L2",
}


def table(title: str | None = None) -> Table:
    """A table that folds long cells (slide names, paths) to the terminal's width rather
    than cutting them. Cells and titles given as `Text` are shown as they are (no markup)."""
    return Table(title=None if title is None else Text(title), title_justify="left")


def add_text_column(t: Table, name: str) -> None:
    """A column of names or paths: folded anywhere (paths have no spaces to wrap at)."""
    t.add_column(name, justify="left", overflow="fold", min_width=8)


def add_number_column(t: Table, name: str) -> None:
    """A column of numbers (they are single words: the header wraps, they do not)."""
    t.add_column(name, justify="right")


def line(text: str, console: Console | None = None) -> None:
    """One line as it is: no markup, and long names left whole for the terminal to wrap."""
    (console or stdout).print(text, markup=False, highlight=False, soft_wrap=True)


def show_hits(result: SearchResult) -> None:
    """The hits as a table on stdout, then why there are fewer than k, if there are."""
    region = result.query_rows * result.query_cols > 1
    kind = f"{result.query_rows} x {result.query_cols} tile region" if region else "tile"
    if result.scale != "all":
        searched = ", ".join(f"{m:g}x" for m in result.searched_magnifications)
        line(f"--scale {result.scale}: searched {searched}")
    if result.query_read_at:
        line(
            "region's magnification is not indexed: read at the nearest indexed one, "
            f"{result.query_read_at:g}x"
        )
    if result.query_resized:
        line(f"query shorter than a tile: resized up x{result.query_resized:g} to search it")
    verified = " verified," if result.verified else ""
    t = table(f"{result.query} ({kind} query,{verified} {result.seconds * 1e3:.1f} ms)")
    add_number_column(t, "rank")
    add_text_column(t, "slide")
    for col in ("mag", "x", "y", "w", "h"):
        add_number_column(t, col)
    if result.verified:  # ranked by inliers: those are the score, not a distance
        add_number_column(t, "inliers")
        add_number_column(t, "matches")
    else:
        add_number_column(t, distance_header(result))
    add_number_column(t, "similarity")
    turned = any(h.orientation != "none" for h in result.hits)
    if turned:  # names fold (fliplr-rot270) so the table keeps within 80 columns
        t.add_column("turned", justify="left", overflow="fold")
    for h in result.hits:
        score = (
            [str(h.inliers), "" if h.matches is None else str(h.matches)]
            if result.verified
            else [f"{h.distance:.6g}"]
        )
        t.add_row(
            str(h.rank),
            Text(h.slide),
            f"{h.magnification:g}x",
            str(h.x),
            str(h.y),
            str(h.w),
            str(h.h),
            *score,
            "" if h.similarity is None else f"{h.similarity:.3f}",
            *([h.orientation] if turned else []),
        )
    stdout.print(t)
    labelled = {h.slide: h.labels for h in result.hits if h.labels}  # in rank order
    for slide, labels in labelled.items():  # under the table: a column would fold them
        line(f"labels of {slide}: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    why = short_reason(result)
    if why:
        line(why)


def distance_header(result: SearchResult) -> str:
    """`distance (Hamming bits)`, `distance (squared L2)`, ...; a region's distance is D,
    the sum of both directions' per-tile distances."""
    unit = DISTANCE_UNITS.get(result.distance_kind or "")
    if unit is None:
        return "distance"
    if result.query_rows * result.query_cols > 1:
        return f"D ({unit})"
    return f"distance ({unit})"


def short_reason(result: SearchResult) -> str | None:
    """Why a result holds fewer than k hits (None when it holds k), e.g. `3 of k=10 hits:
    the bundle has 3 tiles at the searched magnifications (20x)`."""
    k, n = result.k, len(result.hits)
    if k is None or n >= k:
        return None
    reasons = []
    if result.below_min_similarity:
        reasons.append(
            f"{result.below_min_similarity} below --min-similarity {result.min_similarity:g}"
        )
    found = n + result.below_min_similarity
    if found < k:
        mags = ", ".join(f"{m:g}x" for m in result.searched_magnifications)
        where = f"at the searched magnifications ({mags})"
        if result.slides is not None:
            where += f" of the {len(result.slides)} searched slides"
        tiles = result.searched_tiles
        if result.distance_kind == "inliers":
            places = "place" if found == 1 else "places"
            reasons.append(f"only {found} {places} had enough local-feature inliers {where}")
        elif tiles is not None and tiles < k and result.query_rows * result.query_cols == 1:
            reasons.append(f"the bundle has {tiles} tiles {where}")
        elif result.query_rows * result.query_cols > 1:
            shape = f"{result.query_rows} x {result.query_cols} tile region" + "s" * (found != 1)
            held = f" in {tiles} tiles" if tiles is not None else ""
            reasons.append(f"only {found} non-overlapping {shape} were found{held} {where}")
        else:
            held = f" ({tiles} tiles {where})" if tiles is not None else ""
            reasons.append(f"the index returned no more{held}")
    return f"{n} of k={k} hits: " + "; ".join(reasons)


def show_info(info: IndexInfo) -> None:
    line(
        f"{info.path}: recipe {info.recipe} ({info.descriptor} -> {info.encoder} "
        f"{info.bits} bits), {info.index_kind} index"
        + (f" nlist {info.nlist} nprobe {info.nprobe}" if info.nlist else "")
        + f", {plural(len(info.slides), 'slide')}, {plural(info.tiles, 'tile')}, "
        + (f"{info.local_features} local features, " if info.local_features is not None else "")
        + f"{info.bytes_on_disk / 1e6:.2f} MB, generation {info.generation}, "
        + plural(info.segments, "segment")
        + (f" ({info.removed_tiles} removed tiles)" if info.removed_tiles else "")
    )
    if info.bit_statistics:
        st = info.bit_statistics
        line(
            f"codes: bit balance {st['bit_balance']:.3f} (0 is ideal), mean |bit "
            f"correlation| {st['bit_correlation']:.3f}, constant bits "
            f"{int(st['constant_bits'])}"
            + (f" (over {int(st['codes']):,} codes)" if st.get("codes", 0) < info.tiles else "")
        )
    t = table()
    add_number_column(t, "id")
    add_text_column(t, "slide")
    add_text_column(t, "base")
    add_text_column(t, "magnifications")
    add_number_column(t, "tiles")
    add_text_column(t, "path")
    for s in info.slides:
        t.add_row(
            str(s.slide_id),
            Text(s.name),
            f"{s.base_magnification:g}x ({s.magnification_source})",
            ", ".join(f"{m:g}" for m in s.magnifications),
            str(s.tiles),
            Text(s.path),
        )
    stdout.print(t)


def show_eval(report: EvalReport) -> None:
    t = table(
        f"{report.recipe}: {report.tiles} tiles, {report.classes} classes ({report.protocol})"
    )
    cols = (
        "seed_map_at_10",
        "map_at_10",
        "precision_at_5",
        "precision_at_10",
        "majority_vote_at_5",
        "queries",
    )
    add_text_column(t, "class")
    for c in cols:
        add_number_column(t, c.replace("_at_", "@").replace("_", " "))

    def row(name: str, m: object) -> list[str]:
        return [name] + [
            f"{getattr(m, c):.3f}" if c != "queries" else str(m.queries)  # type: ignore[attr-defined]
            for c in cols
        ]

    for name, m in report.per_class.items():
        t.add_row(Text(name), *row(name, m)[1:])
    t.add_row(*row("mean (classes)", report.mean))
    t.add_row(*row("mean (queries)", report.micro))
    stdout.print(t)


def show_slide_eval(report: SlideEvalReport) -> None:
    t = table(
        f"{report.recipe} ({report.method}): {report.slides} slides, {report.classes} "
        f"classes ({report.protocol})"
    )
    cols = ("acc_at_1", "acc_at_3", "acc_at_5", "mv_at_1", "mv_at_3", "mv_at_5", "map_at_5")
    add_text_column(t, "class")
    for c in (*cols, "f1", "n"):
        add_number_column(t, c.replace("_at_", "@").replace("_", " "))

    def row(m: SlideMetricSet) -> list[str]:
        f1 = "" if m.f1 is None else f"{m.f1:.3f}"
        return [f"{getattr(m, c):.3f}" for c in cols] + [f1, str(m.queries)]

    for name, m in report.per_class.items():
        t.add_row(Text(name), *row(m))
    t.add_row("mean", *row(report.mean))  # of the classes' means (f1: macro-F1)
    t.add_row("all", *row(report.micro))  # every query alike
    stdout.print(t)
    if report.skipped:
        stderr.print(f"not queried (no tissue): {', '.join(report.skipped)}")


def show_verdict(verdict: Verdict) -> None:
    """The training verdict on stderr (stdout stays for --json): a warning when the run
    did not learn."""
    if verdict.learned:
        stderr.print("training verdict: learned")
    else:
        stderr.print(f"warning: training verdict: {verdict.line}", style="bold yellow")


def note_readonly(ix: Index) -> None:
    """One line on stderr when a bundle is of an older format (read-only)."""
    man = ix.bundle.manifest
    if man.readonly:
        sys.stderr.write(
            f"note: {ix.bundle.root} is bundle format {man.format_version}, read-only in "
            f"this cbir; `cbir upgrade {ix.bundle.root}` converts it\n"
        )
