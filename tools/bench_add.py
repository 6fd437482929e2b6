#!/usr/bin/env python
"""Incremental update benchmark for cbir: add one slide to a large bundle, remove it, compact.

What it measures
    A stats-lsh32 bundle of `--n` synthetic tiles (default 1,000,000) is built once, in a
    subprocess, by `bench_search.build_bundle` (synthetic 12-d descriptors of 100 x 100
    tile slides, the recipe's LSH fitted on them, written through the real bundle code:
    LMDB, Faiss IndexBinaryIVF from 100,000 tiles on, atomic commit). With `--workdir` the
    bundle is kept and reused by later runs with the same --n, --bits and --seed.

    One real slide file is added and removed again, `--repeat` times, each operation in a
    fresh Python process (`python tools/bench_add.py --child OP ...`) that opens the bundle
    itself, exactly as a user's `cbir add` / `cbir remove` would:

    * add: `cbir.add_slides(bundle, [slide])`: open the bundle, read and describe the
      slide (tissue mask, tiles at 5-40x, stats descriptor, LSH codes), write them as a
      new segment (LMDB + Faiss index from the collection's trained quantizer), fsync,
      publish the manifest (format 2: copy the whole LMDB and rewrite the whole index);
    * remove: `cbir.remove_slides(bundle, [slide])`: a tombstone in the manifest (format
      2: the same whole-generation rewrite, minus the slide's tiles);
    * compact: bundle format 2 has no compaction (every add and remove already rewrites
      the bundle), so it is reported as null with a note. Format 3 (issue 12): each
      repeat is add (a new segment), `cbir compact` (merge it into the big segment:
      `compact`), remove (a tombstone in the merged segment: the manifest alone), and
      `cbir compact` again (rewrite without the tombstoned tiles: `compact_tombstones`).

    Per operation, from the child process:
    * seconds: wall time of the API call alone (imports of cbir, Faiss, LMDB done before;
      lazy imports inside the call, such as the descriptor's, are included);
      process_seconds: the child's whole life as the parent saw it (interpreter, imports);
    * bytes_written: /proc/self/io `write_bytes` of the child during the call (bytes it
      sent, or caused to be sent, to the block layer: write() and mmap-dirtied LMDB pages);
      also `wchar` (bytes passed to write()-like calls) and `cancelled_write_bytes`;
    * peak_rss_mb: ru_maxrss of the child (os.wait4), and its RSS just before the call;
    * bundle_bytes_before / _after: sum of file sizes under the bundle directory;
    * stage_seconds of the IndexReport (describing vs writing) and the child's CPU seconds.
    Before each operation every bundle file is read once, so each starts with the bundle
    in the page cache. The slide is a deterministic 3-level pyramidal TIFF: cbir's sample
    image (`cbir.slides.sample.sample_image()`, 2048 x 2048 px at 0.25 um/px) tiled `--slide-cols`
    times side by side; 3 gives 532 stats-lsh32 tiles. Values at the top of each operation
    are medians over the repeats; `runs` has each one. Other processes' CPU seconds during
    each operation and the whole run (benchutil.CpuMeter minus the children's own CPU) are
    reported: on a busy 2-core machine the timings are contended. They include kernel
    threads, such as the writeback of the children's own writes.

Run (from the repository root, with the venv active)
    python tools/bench_add.py --n 1000000 --json      # 20-80 s on 2 cores, most of it the build
    python tools/bench_add.py --n 10000000 --workdir /tmp/bench-add-1e7 --json
        # build 12 min (2.9 GB peak RSS, 0.93 GB bundle), then ~30 s; reruns reuse the bundle
One JSON object goes to stdout with --json (a short summary otherwise); logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil

SLIDE_MPP = 0.25  # um/px of the sample image (40x)
PARAMS_FILE = "bench_add.json"  # in --workdir: what the kept bundle was built with
GOAL = "issue 12: add and remove in <= 2 s at 1e7 tiles, writing O(new data)"
COMPACT_NOTE = (
    "bundle format 2 has no compaction: there is no `cbir compact`, and every add and "
    "remove already rewrites the whole bundle (LMDB compacted copy + whole Faiss index)"
)


def log(msg: str) -> None:
    """Write a timestamped progress line to stderr."""
    benchutil.log("bench_add", msg)


def proc_io() -> dict[str, int]:
    """This process's /proc/self/io counters (bytes); empty where /proc is missing."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(":") for line in lines)}


def rss_mb() -> float | None:
    """This process's resident set size now, in MiB (from /proc/self/status)."""
    return benchutil.memory_mb().get("VmRSS")


def dir_bytes(root: Path) -> tuple[int, int]:
    """(sum of file sizes, allocated bytes) under root."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def warm_cache(root: Path) -> None:
    """Read every file under root once, so an operation starts with it in the page cache."""
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(8 << 20):
                    pass


# -- the child: one operation in a fresh process -----------------------------------------


def child(op: str, bundle: Path, slide: Path, out: Path, args: argparse.Namespace) -> None:
    """Run one operation and write its measurements as JSON to `out`."""
    result: dict[str, object] = {"op": op}
    if op == "build":
        from bench_search import build_bundle

        io0, t0 = proc_io(), time.perf_counter()
        result["build"] = build_bundle(bundle, f"stats-lsh{args.bits}", args.n, args.seed)
    else:
        import cbir
        import cbir.indexer  # noqa: F401  (Faiss, LMDB, pipeline: imported before the clock)

        result["rss_before_mb"] = rss_mb()
        io0, t0 = proc_io(), time.perf_counter()
        if op == "add":
            report = cbir.add_slides(bundle, [slide])
        elif op == "remove":
            report = cbir.remove_slides(bundle, [str(slide)])
        elif op == "compact":
            from cbir.cli.main import app

            app(["compact", str(bundle)], standalone_mode=False)
            report = None
        else:
            raise ValueError(f"unknown operation {op!r}")
        if report is not None:
            result["report"] = report.model_dump(mode="json")
    result["seconds"] = time.perf_counter() - t0
    io1 = proc_io()
    result["io"] = {k: io1[k] - io0.get(k, 0) for k in io1}
    result["io_process"] = io1
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write_text(json.dumps(result))


def run_child(op: str, bundle: Path, slide: Path, args: argparse.Namespace) -> dict[str, object]:
    """Run `op` in a fresh interpreter; returns its result with wall time, CPU and peak RSS
    (os.wait4) and other processes' CPU seconds meanwhile."""
    with tempfile.TemporaryDirectory(prefix="cbir-bench-add-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            op,
            "--bundle",
            str(bundle),
            "--slide",
            str(slide),
            "--out",
            str(out),
            "--n",
            str(args.n),
            "--bits",
            str(args.bits),
            "--seed",
            str(args.seed),
        ]
        meter = benchutil.CpuMeter()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sys.stderr)  # child's stdout (CLI output) -> stderr
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        other = meter.other_seconds()
        if proc.returncode != 0:
            raise RuntimeError(f"{op} child exited with {proc.returncode}: {' '.join(cmd)}")
        result = json.loads(out.read_text())
    cpu = usage.ru_utime + usage.ru_stime
    result["process_seconds"] = wall
    result["child_cpu_seconds"] = round(cpu, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is KiB on Linux
    result["other_processes_cpu_seconds"] = (
        None if other is None else round(max(0.0, other - cpu), 2)
    )
    return result


# -- the parent ---------------------------------------------------------------------------


def make_slide(workdir: Path, cols: int) -> tuple[Path, tuple[int, ...]]:
    """The deterministic test slide (written once per workdir): the sample image tiled
    `cols` times side by side, (2048, 2048 * cols, 3) uint8 at SLIDE_MPP um/px, 3 levels."""
    import numpy as np

    from cbir.slides.sample import sample_image, write_pyramidal_tiff

    path = workdir / f"sample-x{cols}.tif"
    image = np.tile(sample_image(), (1, cols, 1))
    if not path.is_file():
        write_pyramidal_tiff(path, image, mpp=SLIDE_MPP)
        log(f"wrote {path} ({path.stat().st_size} bytes, {image.shape[1]} x {image.shape[0]} px)")
    return path.resolve(), image.shape


def read_manifest(root: Path) -> dict[str, object] | None:
    """The bundle's manifest.json as a dict (whatever its format version), or None."""
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_bundle(
    root: Path, slide: Path, args: argparse.Namespace, params: dict[str, object]
) -> dict[str, object] | None:
    """Reuse the kept bundle when it was built with the same parameters (removing the test
    slide left by an interrupted run), else build it in a child; returns the build's
    measurements, or None when reused."""
    params_path = root.parent / PARAMS_FILE
    manifest = read_manifest(root)
    if manifest is not None and params_path.is_file():
        if json.loads(params_path.read_text()) == params:
            if manifest["counts"]["tiles"] != args.n:
                log("bundle holds more than --n tiles: removing the test slide (not timed)")
                import cbir

                try:
                    cbir.remove_slides(root, [str(slide)])
                except cbir.CbirError as exc:
                    log(f"could not remove it ({exc}); rebuilding")
                manifest = read_manifest(root)
            if manifest is not None and manifest["counts"]["tiles"] == args.n:
                log(f"reusing {root} ({args.n} tiles)")
                return None
    params_path.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    log(f"building {args.n} tiles, recipe stats-lsh{args.bits}, bundle {root} (child process)")
    build = run_child("build", root, slide, args)
    params_path.write_text(json.dumps(params))
    return {
        **build["build"],
        "process_seconds": round(build["process_seconds"], 2),
        "peak_rss_mb": build["peak_rss_mb"],
        "bytes_written": build["io"].get("write_bytes"),
        "child_cpu_seconds": build["child_cpu_seconds"],
        "other_processes_cpu_seconds": build["other_processes_cpu_seconds"],
    }


def has_compact() -> bool:
    """Whether the CLI has a `compact` command (bundle format 3, issue 12)."""
    import typer

    from cbir.cli.main import app

    return "compact" in typer.main.get_command(app).commands  # type: ignore[attr-defined]


def measure(op: str, root: Path, slide: Path, args: argparse.Namespace) -> dict[str, object]:
    """One operation in a child, with the bundle warm in the page cache and its size
    before and after."""
    warm_cache(root)
    before = dir_bytes(root)[0]
    r = run_child(op, root, slide, args)
    after = dir_bytes(root)[0]
    io = r["io"]
    row = {
        "seconds": round(r["seconds"], 3),
        "process_seconds": round(r["process_seconds"], 3),
        "bytes_written": io.get("write_bytes"),
        "wchar": io.get("wchar"),
        "cancelled_write_bytes": io.get("cancelled_write_bytes"),
        "bytes_written_process": r["io_process"].get("write_bytes"),
        "peak_rss_mb": r["peak_rss_mb"],
        "rss_before_mb": r.get("rss_before_mb"),
        "bundle_bytes_before": before,
        "bundle_bytes_after": after,
        "child_cpu_seconds": r["child_cpu_seconds"],
        "other_processes_cpu_seconds": r["other_processes_cpu_seconds"],
    }
    report = r.get("report")
    if report is not None:
        row["stage_seconds"] = report["stage_seconds"]
        row["tiles_total_after"] = report["tiles_total"]
        if report["added"]:
            row["slide_tiles"] = report["added"][0]["tiles"]
            row["slide_tiles_per_magnification"] = report["added"][0]["tiles_per_magnification"]
    log(
        f"{op}: {row['seconds']} s (process {row['process_seconds']} s), "
        f"write_bytes {row['bytes_written']}, peak RSS {row['peak_rss_mb']} MiB, "
        f"bundle {before} -> {after} B, other CPU {row['other_processes_cpu_seconds']} s"
    )
    return row


MEDIAN_KEYS = (
    "seconds",
    "process_seconds",
    "bytes_written",
    "wchar",
    "cancelled_write_bytes",
    "peak_rss_mb",
    "rss_before_mb",
)


def summarise(runs: list[dict[str, object]], bundle_bytes: int) -> dict[str, object]:
    """Medians over repeats of the main fields, the bytes written per bundle byte, the runs."""
    out: dict[str, object] = {}
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    if out["bytes_written"] is not None:
        out["bytes_written_per_bundle_byte"] = round(out["bytes_written"] / bundle_bytes, 3)
    out["runs"] = runs
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    """Build or reuse the bundle, time add / remove / compact, return the result dict."""
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="cbir-bench-add-")
        workdir = Path(tmp)
    else:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "idx"
    whole = benchutil.CpuMeter()
    try:
        slide, shape = make_slide(workdir, args.slide_cols)
        params = {"n": args.n, "bits": args.bits, "seed": args.seed}
        build = ensure_bundle(root, slide, args, params)
        manifest = read_manifest(root)
        assert manifest is not None
        size, allocated = dir_bytes(root)
        compact = has_compact()
        ops: dict[str, list[dict[str, object]]] = {
            "add": [],
            "remove": [],
            "compact": [],
            "compact_tombstones": [],
        }
        for i in range(args.repeat):
            log(f"repeat {i + 1}/{args.repeat}")
            ops["add"].append(measure("add", root, slide, args))
            if compact:  # format 3: merge the new segment into the big one, remove the
                # slide from it (a tombstone), merge again to drop the tombstoned tiles
                ops["compact"].append(measure("compact", root, slide, args))
                ops["remove"].append(measure("remove", root, slide, args))
                ops["compact_tombstones"].append(measure("compact", root, slide, args))
            else:
                ops["remove"].append(measure("remove", root, slide, args))
        children_cpu = sum(float(r["child_cpu_seconds"]) for rows in ops.values() for r in rows)
        children_cpu += 0.0 if build is None else float(build["child_cpu_seconds"])
        other = whole.other_seconds()
        other = None if other is None else round(max(0.0, other - children_cpu), 2)
        add = summarise(ops["add"], size)
        remove = summarise(ops["remove"], size)
        tiles = ops["add"][0].get("slide_tiles")
        notes = [
            f"goal ({GOAL}): add {add['seconds']} s, remove {remove['seconds']} s at "
            f"{manifest['counts']['tiles']} tiles; add wrote {add['bytes_written']} B = "
            f"{add.get('bytes_written_per_bundle_byte')} x the bundle for {tiles} new tiles",
        ]
        if not compact:
            notes.append(COMPACT_NOTE)
        other_ops = round(
            sum(float(r["other_processes_cpu_seconds"] or 0.0) for v in ops.values() for r in v), 2
        )
        if other_ops > 1.0:
            notes.append(
                f"other processes used {other_ops} CPU s during the timed operations on this "
                f"machine ({os.cpu_count()} cores): timings are contended; rerun on a quiet one"
            )
        for line in notes:
            log(line)
        return {
            "n": manifest["counts"]["tiles"],
            "format": manifest["format_version"],
            "recipe": manifest["recipe"]["name"],
            "index_kind": manifest.get("index_kind"),
            "nlist": manifest.get("nlist"),
            "bundle_bytes": size,
            "bundle_bytes_allocated": allocated,
            "bytes_per_tile": round(size / max(1, manifest["counts"]["tiles"]), 2),
            "slide": {
                "file": slide.name,
                "file_bytes": slide.stat().st_size,
                "image_shape": list(shape),
                "mpp": SLIDE_MPP,
                "tiles": tiles,
                "tiles_per_magnification": ops["add"][0].get("slide_tiles_per_magnification"),
            },
            "add": add,
            "remove": remove,
            "compact": summarise(ops["compact"], size) if compact else None,
            "compact_tombstones": (summarise(ops["compact_tombstones"], size) if compact else None),
            "build": build,
            "repeat": args.repeat,
            "seed": args.seed,
            "cpu_count": os.cpu_count(),
            "other_processes_cpu_seconds": other,
            "other_processes_cpu_seconds_operations": other_ops,
            "goal": GOAL,
            "notes": notes,
            "workdir": None if tmp else str(workdir),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000, help="tiles in the bundle")
    p.add_argument(
        "--bits", type=int, choices=(32, 64), default=32, help="recipe stats-lsh32 or stats-lsh64"
    )
    p.add_argument("--repeat", type=int, default=3, help="add + remove cycles")
    p.add_argument(
        "--slide-cols",
        type=int,
        default=3,
        help="copies of the 2048 px sample image side by side in the test slide (3: 532 tiles)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workdir",
        default=None,
        help="where to keep the bundle and the slide (reused by reruns); default a temp dir",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--bundle", default=None, help=argparse.SUPPRESS)
    p.add_argument("--slide", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n < 1000 or args.repeat < 1 or args.slide_cols < 1:
        p.error("--n must be >= 1000; --repeat and --slide-cols >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.child is not None:
        child(args.child, Path(args.bundle), Path(args.slide), Path(args.out), args)
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for op in ("add", "remove", "compact"):
            r = result[op]
            line = (
                "null (no compaction in this format)"
                if r is None
                else (
                    f"{r['seconds']} s, {r['bytes_written']} B written, {r['peak_rss_mb']} MiB peak"
                )
            )
            print(f"{op:8s} {line}")
        print(f"n {result['n']}, format {result['format']}, bundle {result['bundle_bytes']} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
