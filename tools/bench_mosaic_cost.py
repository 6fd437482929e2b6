#!/usr/bin/env python
"""What the slide mosaics add to indexing: `cbir build-index --json` on given slides,
once per recipe, reporting the mosaic stages against the whole build.

What is measured
    "mosaic" (choosing each slide's mosaic: thumbnail colours, k-means by colour then by
    place; in the plan step) and "mosaics" (pooled vectors and mosaic rows written to
    LMDB; in the store step), in seconds summed over the build, against the build's wall
    seconds. The share is (mosaic + mosaics) / wall: an upper bound on what the mosaics
    add, since the plan step overlaps describing. One warm-up build of the first slide
    runs first, so imports and OpenCV's first k-means are not counted.

Run (from the repository root, with the venv active)
    python tools/make_bench_slide.py /tmp/bench-40x-jpeg.svs
    python tools/bench_mosaic_cost.py /tmp/bench-40x-jpeg.svs ../shared/data/wsi/*.svs \
        --recipes stats-lsh32,effnet-flat --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MOSAIC_STAGES = ("mosaic", "mosaics")


def build(slides: list[str], recipe: str, out: Path) -> dict:
    """One `cbir build-index --json` -> its JSON object."""
    cmd = [
        str(Path(sys.executable).parent / "cbir"),
        "build-index",
        *slides,
        "-o",
        str(out),
        "-r",
        recipe,
    ]
    done = subprocess.run([*cmd, "--overwrite", "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="+")
    parser.add_argument("--recipes", default="stats-lsh32,effnet-flat")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cbir-mosaic-cost-") as tmp:
        for recipe in args.recipes.split(","):
            build(args.slides[:1], recipe, Path(tmp) / "warm")
            r = build(args.slides, recipe, Path(tmp) / recipe)
            stages = r["stage_seconds"]
            mosaic = sum(stages.get(s, 0.0) for s in MOSAIC_STAGES)
            rows.append(
                {
                    "recipe": recipe,
                    "slides": r["slides_total"],
                    "tiles": r["tiles_total"],
                    "build_seconds": r["seconds"],
                    "mosaic_seconds": round(stages.get("mosaic", 0.0), 4),
                    "mosaics_seconds": round(stages.get("mosaics", 0.0), 4),
                    "mosaic_share": round(mosaic / r["seconds"], 4),
                }
            )
            print(rows[-1], file=sys.stderr)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
