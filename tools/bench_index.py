#!/usr/bin/env python
"""Indexing benchmark for cbir: tiles per second and bytes per tile on real slides.

What it measures
    `cbir.build_index(slides, out, recipe, overwrite=True)` over the real slides in
    `--data` (default ../shared/data/wsi/*.svs relative to the repository root), into a
    temp directory, `--repeat` times. Each build is timed end to end (open, tissue mask,
    read, resize, describe, fit, encode, LMDB, Faiss add, commit with fsync):

    * tiles_per_s = tiles_total / wall seconds of the best build (median given too);
    * bytes_per_tile = bundle size on disk (sum of file sizes) / tiles_total;
    * stage_seconds = the IndexReport's per-stage timings of the best build, and
      `bottleneck`, the largest stage. Stages inside describe_slide (read, resize,
      describe) run on worker threads and are summed over threads (thread-seconds),
      so they can add up to more than the wall time;
    * per-slide rows: the same, building a bundle of each slide alone (best of --repeat).

    The first build may read slide files from disk; later ones hit the page cache.

Run (from the repository root, with the venv active)
    python tools/bench_index.py --json
    python tools/bench_index.py --data /path/to/slides --glob '*.svs' --repeat 5 --json
One JSON object goes to stdout with --json (a short summary otherwise); logs go to
stderr. Exits with code 2 and a one-line message when the data folder or slides are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchutil

import cbir
from cbir.indexer import IndexReport

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "wsi"
STAGE_NOTE = (
    "stage_seconds are summed StageTimer seconds; read/resize/describe run on "
    "super-block worker threads (cbir.describe.DEFAULT_WORKERS) and are thread-seconds, "
    "so stages can add up to more than the wall time"
)


def log(msg: str) -> None:
    """Write a timestamped progress line to stderr."""
    benchutil.log("bench_index", msg)


def bundle_bytes(root: Path) -> int:
    """Sum of the sizes of the files under a bundle directory."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def bottleneck(stages: dict[str, float]) -> str | None:
    """The name of the stage with the most seconds."""
    return max(stages, key=stages.get) if stages else None


def timed_builds(
    slides: list[Path], recipe: str, repeat: int, tmp: Path, label: str
) -> tuple[list[float], IndexReport, int]:
    """Build a bundle of `slides` `repeat` times into fresh dirs under tmp.

    Returns wall seconds per build, the report of the fastest build and its bundle bytes.
    """
    walls: list[float] = []
    best: tuple[float, IndexReport, int] | None = None
    for i in range(repeat):
        out = tmp / f"{label}-{i}"
        t0 = time.perf_counter()
        report = cbir.build_index([str(s) for s in slides], out, recipe, overwrite=True)
        wall = time.perf_counter() - t0
        size = bundle_bytes(out)
        shutil.rmtree(out, ignore_errors=True)
        walls.append(wall)
        log(
            f"{label} build {i + 1}/{repeat}: {report.tiles_total} tiles in {wall:.2f} s "
            f"({report.tiles_total / wall:.0f} tiles/s)"
        )
        if best is None or wall < best[0]:
            best = (wall, report, size)
    assert best is not None
    return walls, best[1], best[2]


def summary(walls: list[float], report: IndexReport, size: int) -> dict[str, object]:
    """Throughput, size and stage fields of one set of builds."""
    tiles = report.tiles_total
    best, median = min(walls), statistics.median(walls)
    stages = dict(sorted(report.stage_seconds.items(), key=lambda kv: -kv[1]))
    return {
        "tiles_total": tiles,
        "wall_seconds_best": round(best, 4),
        "wall_seconds_median": round(median, 4),
        "wall_seconds_all": [round(w, 4) for w in walls],
        "tiles_per_s": round(tiles / best, 1),
        "tiles_per_s_median": round(tiles / median, 1),
        "bytes_on_disk": size,
        "bytes_per_tile": round(size / max(1, tiles), 2),
        "index_kind": report.index_kind,
        "stage_seconds": stages,
        "stage_seconds_sum": round(sum(stages.values()), 4),
        "bottleneck": bottleneck(stages),
    }


def find_slides(data: Path, pattern: str) -> list[Path]:
    """Sorted slide files matching pattern in data; SystemExit(2) with a message if none."""
    if not data.is_dir():
        raise SystemExit(_fail(f"{data}: slide folder not found (give --data DIR)"))
    slides = sorted(p for p in data.glob(pattern) if p.is_file())
    if not slides:
        raise SystemExit(_fail(f"{data}: no slides matching {pattern!r}"))
    return slides


def _fail(msg: str) -> int:
    """Print a one-line error on stderr; returns exit code 2."""
    print(f"bench_index: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the collection build and the per-slide builds; return the result dict."""
    data = Path(args.data)
    slides = find_slides(data, args.glob)
    ignored = sorted(p.name for p in data.iterdir() if p.is_file() and p not in slides)
    log(
        f"{len(slides)} slides: {', '.join(s.name for s in slides)}"
        + (f" (ignored: {', '.join(ignored)})" if ignored else "")
    )
    tmp = Path(tempfile.mkdtemp(prefix="cbir-bench-index-"))
    meter = benchutil.CpuMeter()
    try:
        walls, report, size = timed_builds(slides, args.recipe, args.repeat, tmp, "all")
        result: dict[str, object] = {
            "recipe": report.recipe,
            "data": str(data),
            "slides": [s.name for s in slides],
            "ignored_files": ignored,
            "repeat": args.repeat,
            **summary(walls, report, size),
            "stage_seconds_note": STAGE_NOTE,
            "cpu_count": os.cpu_count(),
        }
        rows = []
        for s in slides:
            w, r, b = timed_builds([s], args.recipe, args.repeat, tmp, s.stem)
            added = r.added[0]
            rows.append(
                {
                    "slide": s.name,
                    "file_bytes": s.stat().st_size,
                    "base_magnification": added.base_magnification,
                    "magnification_source": added.magnification_source,
                    "tiles_per_magnification": added.tiles_per_magnification,
                    **summary(w, r, b),
                }
            )
        result["per_slide"] = rows
        result["other_processes_cpu_seconds"] = other = meter.other_seconds()
        if other is not None and other > 1.0:
            log(f"other processes used {other} CPU s during this run: timings are contended")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="folder of slides (default ../shared/data/wsi from the repo root)",
    )
    p.add_argument("--glob", default="*.svs", help="slide file pattern in --data")
    p.add_argument("--recipe", default="stats-lsh32", help="recipe name or .toml path")
    p.add_argument("--repeat", type=int, default=3, help="builds per measurement (best/median)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in (
            "tiles_total",
            "wall_seconds_best",
            "wall_seconds_median",
            "tiles_per_s",
            "bytes_per_tile",
            "bottleneck",
            "stage_seconds",
        ):
            print(f"{key:20s} {result[key]}")
        for row in result["per_slide"]:
            print(
                f"  {row['slide']}: {row['tiles_total']} tiles, {row['tiles_per_s']} tiles/s, "
                f"{row['bytes_per_tile']} B/tile, bottleneck {row['bottleneck']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
