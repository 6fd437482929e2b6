#!/usr/bin/env python
"""Build throughput in one process vs on Ray with 1 and 2 describers, on this machine.

    python tools/bench_ray.py --json [--recipe stats-lsh32] [--repeat 2]

Builds a bundle of the two real SVS slides of ../shared/data/wsi (cmu-1-small-region and
tcga-cr-7395-01a-01-ts1) with `cbir.build_index`: in this process, then with
`ray="auto"` on a local Ray cluster started here (`ray.init(num_cpus=2)`, started once,
before the clock) with 1 and 2 describers. Reports tiles/s of the whole build (median of
`--repeat`), and checks each Ray bundle holds the same number of tiles.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchutil import CpuMeter, log

import cbir

WSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi"
SLIDES = [WSI / "cmu-1-small-region.svs", WSI / "tcga-cr-7395-01a-01-ts1.svs"]


def timed_build(out: Path, recipe: str, **kw: object) -> tuple[float, int]:
    start = time.perf_counter()
    report = cbir.build_index(SLIDES, out, recipe, overwrite=True, untrained=True, **kw)
    return time.perf_counter() - start, report.tiles_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="stats-lsh32")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not all(p.is_file() for p in SLIDES):
        print(f"bench_ray: the real slides are not in {WSI}", file=sys.stderr)
        raise SystemExit(2)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    meter = CpuMeter()
    runs: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in (
            ("one process", {}),
            ("ray, 1 describer", {"ray": "auto", "ray_workers": 1}),
            ("ray, 2 describers", {"ray": "auto", "ray_workers": 2}),
        ):
            times, tiles = [], 0
            for _ in range(args.repeat):
                seconds, tiles = timed_build(Path(tmp) / "idx", args.recipe, **kw)
                times.append(seconds)
            median = statistics.median(times)
            runs[name] = {
                "seconds": round(median, 3),
                "tiles": tiles,
                "tiles_per_s": round(tiles / median, 1),
                "all_seconds": [round(t, 3) for t in times],
            }
            log("bench_ray", f"{name}: {runs[name]}")
    ray.shutdown()
    out = {
        "recipe": args.recipe,
        "slides": [p.name for p in SLIDES],
        "runs": runs,
        "other_processes_cpu_seconds": meter.other_seconds(),
        "note": "Ray actors share this machine's 2 cores with the driver; other processes' "
        "CPU includes the Ray workers",
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
