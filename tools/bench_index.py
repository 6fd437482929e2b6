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

The benchmark slide (--bench-slide)
    The real slides are small (a few MB, 20x or no stated magnification). With
    --bench-slide the build runs instead on one large Aperio-like slide written by
    tools/make_bench_slide.py (default 40,000 x 30,000 px at 0.25 um/px = 40x, JPEG Q85
    tiles of 256 px, levels at downsample 1/4/16/64 and a stored thumbnail, ~42% of the
    area real H&E tissue in a few blobs on glass; --jpeg2000 for Aperio JPEG 2000 tiles).
    It is written to --bench-dir (default ~/.cache/cbir-bench) when absent, which takes
    a minute or two, and reused afterwards. Then one bundle is built per magnification
    set, `--repeat` times (default 1 here): "5-40x" (the recipe's magnifications) and
    "20x only" (a copy of the recipe with tiling.magnifications = [20]). Each set reports
    tiles, wall seconds, tiles_per_s, stage_seconds and CPU use:

    * cpu_seconds = this process's user + system CPU seconds during the build (all its
      threads, and child processes);
    * cpu_utilisation = cpu_seconds / wall seconds / cpu_count: 1.0 means every core was
      busy the whole build, 0.5 on 2 cores means one core's worth;
    * other_processes_cpu_seconds = CPU seconds of other processes on the machine during
      the build (from /proc/stat): above ~1 s the timings were contended.

Run (from the repository root, with the venv active)
    python tools/bench_index.py --json
    python tools/bench_index.py --data /path/to/slides --glob '*.svs' --repeat 5 --json
    python tools/bench_index.py --bench-slide --json
    python tools/bench_index.py --bench-slide --jpeg2000 --bench-width 20000 \\
        --bench-height 15000 --json
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
import make_bench_slide

import cbir
from cbir.indexer import IndexReport
from cbir.recipes import Recipe, load_recipe

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "wsi"
DEFAULT_BENCH_DIR = Path("~/.cache/cbir-bench")
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


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_builds(
    slides: list[Path],
    recipe: str | Recipe,
    repeat: int,
    tmp: Path,
    label: str,
    cpu: list[dict[str, float | None]] | None = None,
) -> tuple[list[float], IndexReport, int]:
    """Build a bundle of `slides` `repeat` times into fresh dirs under tmp.

    Returns wall seconds per build, the report of the fastest build and its bundle bytes.
    With `cpu`, appends {"cpu_seconds", "other_processes_cpu_seconds"} of each build.
    """
    walls: list[float] = []
    best: tuple[float, IndexReport, int] | None = None
    for i in range(repeat):
        out = tmp / f"{label}-{i}"
        meter, cpu0 = benchutil.CpuMeter(), cpu_seconds()
        t0 = time.perf_counter()
        report = cbir.build_index(
            [str(s) for s in slides], out, recipe, overwrite=True, untrained=True
        )
        wall = time.perf_counter() - t0
        if cpu is not None:
            used = round(cpu_seconds() - cpu0, 2)
            cpu.append({"cpu_seconds": used, "other_processes_cpu_seconds": meter.other_seconds()})
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


MAGNIFICATION_SETS = ("5-40x", "20x only")


def bench_slide_path(args: argparse.Namespace) -> Path:
    """Where the benchmark slide of these options lives (its name says what it is)."""
    compression = "jpeg2000" if args.jpeg2000 else "jpeg"
    name = (
        f"bench-40x-{args.bench_width}x{args.bench_height}-{compression}"
        f"-s{args.bench_seed}-v{make_bench_slide.VERSION}.svs"
    )
    return Path(args.bench_dir).expanduser() / name


def ensure_bench_slide(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The benchmark slide, written first when absent. Returns (path, seconds spent
    writing it, None when it was there)."""
    path = bench_slide_path(args)
    if path.is_file():
        log(f"reusing {path}")
        return path, None
    log(f"writing {path} (absent)")
    t0 = time.perf_counter()
    try:
        make_bench_slide.make_bench_slide(
            path,
            width=args.bench_width,
            height=args.bench_height,
            compression="jpeg2000" if args.jpeg2000 else "jpeg",
            seed=args.bench_seed,
            log=lambda msg: benchutil.log("make_bench_slide", msg),
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise SystemExit(_fail(f"cannot write the benchmark slide: {exc}")) from None
    return path, round(time.perf_counter() - t0, 2)


def magnification_recipe(recipe: Recipe, label: str) -> Recipe:
    """`recipe` itself for "5-40x", a copy tiling at 20x only for "20x only"."""
    if label == "20x only":
        tiling = recipe.tiling.model_copy(update={"magnifications": (20.0,)})
        return recipe.model_copy(update={"tiling": tiling})
    return recipe


def run_bench_slide(args: argparse.Namespace) -> dict[str, object]:
    """Build bundles of the benchmark slide per magnification set; return the result dict."""
    path, generate_seconds = ensure_bench_slide(args)
    with cbir.open_slide(path) as slide:
        info = slide.info
        levels = [list(d) for d in slide.level_dimensions]
    recipe = load_recipe(args.recipe)
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="cbir-bench-index-"))
    sets: dict[str, dict[str, object]] = {}
    try:
        for label in MAGNIFICATION_SETS:
            r = magnification_recipe(recipe, label)
            cpu: list[dict[str, float | None]] = []
            tag = label.replace(" ", "-")
            walls, report, size = timed_builds([path], r, args.repeat, tmp, tag, cpu)
            best = walls.index(min(walls))
            used = cpu[best]["cpu_seconds"] or 0.0
            util = round(used / walls[best] / cores, 3)
            other = cpu[best]["other_processes_cpu_seconds"]
            sets[label] = {
                "magnifications": list(r.tiling.magnifications),
                "tiles_per_magnification": report.added[0].tiles_per_magnification,
                **summary(walls, report, size),
                "cpu_seconds": used,
                "cpu_utilisation": util,
                "cpu_per_build": cpu,
                "other_processes_cpu_seconds": other,
            }
            log(
                f"{label}: {report.tiles_total} tiles, {sets[label]['tiles_per_s']} tiles/s, "
                f"CPU {used} s = {util:.2f} of {cores} cores, bottleneck "
                f"{sets[label]['bottleneck']}"
            )
            if other is not None and other > 1.0:
                log(f"other processes used {other} CPU s during {label}: timings are contended")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "mode": "bench-slide",
        "slide": str(path),
        "file_bytes": path.stat().st_size,
        "generated": generate_seconds is not None,
        "generate_seconds": generate_seconds,
        "width": info.width,
        "height": info.height,
        "mpp": info.mpp,
        "compression": "jpeg2000" if args.jpeg2000 else "jpeg",
        "level_dimensions": levels,
        "base_magnification": info.base_magnification,
        "magnification_source": info.magnification_source,
        "recipe": recipe.name,
        "repeat": args.repeat,
        "cpu_count": cores,
        "tiles_per_s": sets["5-40x"]["tiles_per_s"],
        "tiles_per_s_by_set": {k: v["tiles_per_s"] for k, v in sets.items()},
        "magnification_sets": sets,
        "stage_seconds_note": STAGE_NOTE,
        "cpu_note": (
            "cpu_utilisation = process CPU seconds (user+sys, all threads) / wall / "
            "cpu_count of the best build: 1.0 = all cores busy"
        ),
    }


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
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="builds per measurement (best/median; default 3, 1 with --bench-slide)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bench = p.add_argument_group("benchmark slide (instead of --data)")
    bench.add_argument(
        "--bench-slide",
        action="store_true",
        help="index a large generated Aperio-like 40x slide (written when absent)",
    )
    bench.add_argument("--jpeg2000", action="store_true", help="its JPEG 2000 variant")
    bench.add_argument("--bench-width", type=int, default=40_000, help="level-0 width, px")
    bench.add_argument("--bench-height", type=int, default=30_000, help="level-0 height, px")
    bench.add_argument("--bench-seed", type=int, default=0, help="seed of the slide's layout")
    bench.add_argument(
        "--bench-dir",
        default=str(DEFAULT_BENCH_DIR),
        help="where benchmark slides are kept (default ~/.cache/cbir-bench)",
    )
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.bench_slide else 3
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.bench_slide and min(args.bench_width, args.bench_height) < 1024:
        p.error("--bench-width and --bench-height must be >= 1024")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.bench_slide:
        result = run_bench_slide(args)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{'slide':20s} {result['slide']} ({result['file_bytes']} bytes)")
            for label, row in result["magnification_sets"].items():
                print(
                    f"  {label}: {row['tiles_total']} tiles in {row['wall_seconds_best']} s, "
                    f"{row['tiles_per_s']} tiles/s, CPU utilisation {row['cpu_utilisation']}, "
                    f"bottleneck {row['bottleneck']}, stages {row['stage_seconds']}"
                )
        return 0
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
