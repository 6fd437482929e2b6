#!/usr/bin/env python
"""Cold start of the `cbir` command: wall time of one CLI process, start to exit.

What it measures
    A synthetic stats-lsh32 bundle of `--n` tiles (default 1,000,000; made as
    tools/bench_search.py makes its collection: clustered 12-d stats descriptors through
    the real bundle code path) is searched by fresh `cbir` processes, each timed from
    spawn to exit (`--runs` times, median reported; the OS file cache is warm after the
    first run, so this is a cold *process*, not a cold disk):

    * `cbir search BUNDLE query.png -k 10`: a 224 x 224 tissue crop of the sample image
      (scikit-image's IHC section), a tile query, table on stdout;
    * the same with `--json`;
    * `cbir info BUNDLE`, `cbir recipes`;
    * an error path: `cbir search BUNDLE missing.png` (one line on stderr, exit 2);
    * `python -c pass`, the floor of any Python process here.

    One more `cbir search` runs under `python -X importtime`: the heaviest top-level
    imports, and whether torch or scikit-learn were imported (they must not be for a
    stats bundle).

Run (from the repository root, with the venv active)
    python tools/bench_cli.py --json                        # builds 1e6 tiles, ~40 s
    python tools/bench_cli.py --workdir /tmp/cli --json     # keeps the bundle; reuses it
    python tools/bench_cli.py --workdir /tmp/cli --cbir /path/to/other/cbir --json
One JSON object goes to stdout with --json (a short summary otherwise); logs to stderr.
Goal (issue 11): cold `cbir search` <= 1.0 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil
import numpy as np

HEAVY = ("torch", "sklearn", "scipy", "skimage", "matplotlib", "pandas")


def log(msg: str) -> None:
    benchutil.log("bench_cli", msg)


def cbir_script() -> Path:
    """The `cbir` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "cbir"
    if not script.exists():
        found = shutil.which("cbir")
        if found is None:
            raise SystemExit("bench_cli: no `cbir` console script (pip install -e . first)")
        script = Path(found)
    return script


def ensure_bundle(root: Path, n: int, seed: int) -> dict[str, object]:
    """Build the synthetic bundle at root unless a finished one of n tiles is there."""
    manifest = root / "manifest.json"
    if manifest.exists():
        tiles = json.loads(manifest.read_text())["counts"]["tiles"]
        if tiles == n:
            log(f"reusing {root} ({tiles} tiles)")
            return {"built": False}
    from bench_search import build_bundle

    log(f"building {n} synthetic tiles into {root} ...")
    return {"built": True, **build_bundle(root, "stats-lsh32", n, seed)}


def write_query(path: Path) -> Path:
    """A 224 x 224 tissue crop of the sample image, as PNG."""
    import cv2

    from cbir.slides.sample import sample_image

    crop = sample_image()[800:1024, 800:1024]
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return path


def time_runs(cmd: list[str], runs: int, expect_rc: int = 0) -> dict[str, object]:
    """Median / min / max wall seconds of `runs` fresh processes of cmd."""
    times = []
    env = {**os.environ, "COLUMNS": "120"}
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if proc.returncode != expect_rc:
            raise SystemExit(
                f"bench_cli: {' '.join(cmd)} exited {proc.returncode} (expected {expect_rc}):"
                f"\n{proc.stdout}{proc.stderr}"
            )
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "runs": runs,
    }


def import_profile(cmd: list[str], top: int = 8) -> dict[str, object]:
    """Run cmd (a python script and its arguments) under -X importtime: the heaviest
    top-level imports (cumulative ms) and which heavy optional packages were imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd], capture_output=True, text=True
    )
    top_level: dict[str, float] = {}
    imported = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        imported.add(name.strip().split(".")[0])
        if not name.startswith("  ", 1):  # depth 0: a top-level import of the process
            top_level[name.strip()] = int(cumulative) / 1e3
    heaviest = sorted(top_level.items(), key=lambda kv: -kv[1])[:top]
    return {
        "imports_ms_total": round(sum(top_level.values()), 1),
        "heaviest_top_level_ms": {k: round(v, 1) for k, v in heaviest},
        "heavy_imported": sorted(h for h in HEAVY if h in imported),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="cbir-bench-cli-")
        workdir = Path(tmp)
    else:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "idx"
    meter = benchutil.CpuMeter()
    try:
        build = ensure_bundle(root, args.n, args.seed)
        query = write_query(workdir / "query.png")
        cbir = str(args.cbir or cbir_script())
        search = [cbir, "search", str(root), str(query), "-k", "10"]
        commands = {
            "python_pass": ([sys.executable, "-c", "pass"], 0),
            "search": (search, 0),
            "search_json": ([*search, "--json"], 0),
            "info": ([cbir, "info", str(root)], 0),
            "recipes": ([cbir, "recipes"], 0),
            "error_missing_query": ([cbir, "search", str(root), str(workdir / "no.png")], 2),
        }
        timings = {}
        for name, (cmd, rc) in commands.items():
            timings[name] = time_runs(cmd, args.runs, rc)
            log(f"{name}: median {timings[name]['median_s']} s")
        profile = import_profile(search[:])
        log(f"search imports: {profile}")
        other = meter.other_seconds()
        cold = timings["search"]["median_s"]
        notes = [
            f"cold `cbir search` median {cold} s "
            f"({'meets' if cold <= args.goal else 'MISSES'} the goal <= {args.goal} s)"
        ]
        if profile["heavy_imported"]:
            notes.append(f"the search process imported {profile['heavy_imported']}")
        if other is not None and other > 1.0:
            notes.append(f"other processes used {other} CPU s during the run: rerun when quiet")
        return {
            "n": args.n,
            "recipe": "stats-lsh32",
            **build,
            "cbir": cbir,
            "cold_search_s": cold,
            "goal_s": args.goal,
            "timings": timings,
            "search_imports": profile,
            "cpu_count": os.cpu_count(),
            "other_processes_cpu_seconds": other,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "notes": notes,
            "workdir": None if tmp else str(workdir),
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000, help="tiles in the synthetic bundle")
    p.add_argument("--runs", type=int, default=5, help="processes timed per command")
    p.add_argument("--goal", type=float, default=1.0, help="cold search goal, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workdir",
        default=None,
        help="keep the bundle here and reuse it next time (default: a temp dir, deleted)",
    )
    p.add_argument(
        "--cbir",
        default=None,
        help="the `cbir` script to time (default: this environment's), e.g. one that runs "
        "another checkout, for a before/after comparison on the same bundle",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    if args.n < 1000 or args.runs < 1:
        p.error("--n must be >= 1000 and --runs >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, t in result["timings"].items():
            print(f"{name:22s} {t['median_s']} s (min {t['min_s']}, max {t['max_s']})")
        for line in result["notes"]:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
