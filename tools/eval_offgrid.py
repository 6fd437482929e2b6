#!/usr/bin/env python
"""Off-grid crops of the real slides: are they found at their place?

    python tools/eval_offgrid.py --recipes stats-lsh32[,cnn-lsh32] [--weights cnn-lsh32=cnn.pt]
        [--stride 112] [--n 200] [--seed 0] [--workdir DIR] [--reuse]
        [--search-kw allow_background=true] --json

Protocol: per recipe, ONE bundle of cmu-1-small-region.svs and tcga-cr-7395-01a-01-ts1.svs
(../shared/data/wsi; the TCGA slide has no magnification metadata and gets cbir's 20x
default) is built with `cbir.build_index` into --workdir/<recipe> (--reuse keeps one
already there). --n crops are drawn with numpy default_rng(--seed); each: a random slide,
a random magnification that slide was indexed at, a random size of 224, 448 or 672 output
px (w = h = round(size * base / mag) level-0 px; redrawn if it does not fit the slide),
and a random level-0 position inside the slide that is off the tile grid at that
magnification (>= 16 output px from the grid in at least one axis), with >= 50% tissue
(`cbir.slides.tissue.tissue_mask` of the crop's pixels) and tissue at its centre pixel (up to
200 positions per draw). The crop is queried as a `cbir.Region`, k = 10. Found: hit 1 is
on the crop's slide at its magnification (|diff| < 1e-6) and its level-0 rectangle
[x, x+w) x [y, y+h) contains the crop's centre; rank: the first of the 10 hits that is.
A query raising a `CbirError` counts as not found (`errors`: counts by exception type).
Query time: wall time of the search call, reading the region included.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchutil import CpuMeter, log

from cbir.api import Index, open_index
from cbir.errors import CbirError
from cbir.indexer import build_index
from cbir.recipes import TilingConfig, load_recipe
from cbir.search.hits import Hit, SearchResult
from cbir.search.query import Region, read_region_image
from cbir.slides.tissue import tissue_mask
from cbir.storage.metadata import SlideRecord

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data
SLIDES = [DATA / "wsi" / "cmu-1-small-region.svs", DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"]
SIZES = (224, 448, 672)
MIN_OFF_GRID_PX, MIN_TISSUE, MAX_TRIES, K = 16, 0.5, 200, 10


@dataclass(frozen=True)
class Crop:
    region: Region
    size: int  # output px
    slide_id: int


def search(index: Index, region: Region, k: int, **kw: Any) -> SearchResult:
    """The one search call of this evaluation; --search-kw options pass through."""
    return index.search(region, k=k, **kw)


def off_grid(v: int, step: float, per_px: float) -> float:
    """Output px from level-0 coordinate v to the nearest grid line (lines at i * step)."""
    off = (v % step) / per_px
    return min(off, step / per_px - off)


def draw_crop(index: Index, recs: list[SlideRecord], rng: np.random.Generator) -> Crop:
    for _ in range(MAX_TRIES):
        rec = recs[int(rng.integers(len(recs)))]
        mag, size = float(rng.choice(rec.magnifications)), int(rng.choice(SIZES))
        per_px = rec.info.base_magnification / mag  # level-0 px per output px
        side, step = round(size * per_px), index.recipe.tiling.tile_size * per_px
        if side > min(rec.info.width, rec.info.height):
            continue  # does not fit the slide at this magnification: redraw
        for _ in range(MAX_TRIES):
            x = int(rng.integers(0, rec.info.width - side + 1))
            y = int(rng.integers(0, rec.info.height - side + 1))
            if max(off_grid(x, step, per_px), off_grid(y, step, per_px)) < MIN_OFF_GRID_PX:
                continue
            region = Region(slide=rec.info.path, x=x, y=y, w=side, h=side, magnification=mag)
            mask = tissue_mask(read_region_image(region, rec.info.base_magnification))
            if mask.mean() >= MIN_TISSUE and mask[mask.shape[0] // 2, mask.shape[1] // 2]:
                return Crop(region, size, rec.slide_id)
    raise RuntimeError("eval_offgrid: no off-grid tissue crop found within the allowed tries")


def is_at(hit: Hit, crop: Crop) -> bool:
    r = crop.region
    cx, cy = r.x + r.w / 2, r.y + r.h / 2
    return (
        hit.slide_id == crop.slide_id
        and abs(hit.magnification - r.magnification) < 1e-6
        and hit.x <= cx < hit.x + hit.w
        and hit.y <= cy < hit.y + hit.h
    )


def open_bundle(
    root: Path, recipe: str, weights: Path | None, reuse: bool, stride: int | None
) -> tuple[Index, Any]:
    """The opened bundle and its build seconds (None when reused); `stride` overrides the
    recipe's tile stride (output px)."""
    if reuse and (root / "manifest.json").exists():
        log("offgrid", f"{recipe}: reusing {root}")
        return open_index(root), None
    log("offgrid", f"{recipe}: building {root}")
    r = load_recipe(recipe)
    if stride is not None:
        tiling = TilingConfig(**{**r.tiling.model_dump(), "stride": stride})
        r = r.model_copy(update={"tiling": tiling})
    t = time.perf_counter()
    build_index(SLIDES, root, r, weights=weights, overwrite=True, untrained=weights is None)
    return open_index(root), round(time.perf_counter() - t, 2)


def timed_search(
    run: Callable[[], SearchResult], errors: Counter[str], label: str
) -> tuple[list[Hit], float]:
    """The hits of one search call and its wall ms; a CbirError gives no hits and counts
    in `errors` by type (the first of each type is logged under `label`)."""
    t = time.perf_counter()
    try:
        hits = run().hits
    except CbirError as exc:
        errors[type(exc).__name__] += 1
        if errors[type(exc).__name__] == 1:
            log(label.split(":")[0], f"{label}: {type(exc).__name__}: {exc}")
        hits = []
    return hits, 1e3 * (time.perf_counter() - t)


def rate(values: list[Any]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def evaluate(recipe: str, weights: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    name = Path(recipe).stem + (f"-stride{args.stride}" if args.stride else "")
    root = Path(args.workdir) / name
    index, build_s = open_bundle(root, recipe, weights, args.reuse, args.stride)
    with index:
        recs = [r for r in index.slides.values() if r.magnifications]
        rng = np.random.default_rng(args.seed)
        rows: list[tuple[int, bool, int | None]] = []  # (size, found, rank)
        ms: list[float] = []
        errors: Counter[str] = Counter()
        for i in range(args.n):
            crop = draw_crop(index, recs, rng)
            hits, took = timed_search(
                functools.partial(search, index, crop.region, K, **args.search_kw),
                errors,
                f"offgrid: {recipe}: {crop.region}",
            )
            ms.append(took)
            rank = next((h.rank for h in hits if is_at(h, crop)), None)
            rows.append((crop.size, bool(hits) and is_at(hits[0], crop), rank))
            if (i + 1) % 50 == 0:
                log("offgrid", f"{recipe}: {i + 1}/{args.n}, found {rate([r[1] for r in rows])}")
        ranks = [r[2] for r in rows if r[2] is not None]
        return {
            "recipe": recipe,
            "stride": index.recipe.tiling.stride or index.recipe.tiling.tile_size,
            "tiles": index.bundle.manifest.counts.tiles,
            "bytes_on_disk": index.info().bytes_on_disk,
            "build_seconds": build_s,
            "found_rate": rate([r[1] for r in rows]),
            "found_rate_by_size": {str(s): rate([r[1] for r in rows if r[0] == s]) for s in SIZES},
            "crops_by_size": {str(s): sum(r[0] == s for r in rows) for s in SIZES},
            "in_top10_rate": rate([r[2] is not None for r in rows]),
            "mean_rank_in_top10": round(float(np.mean(ranks)), 2) if ranks else None,
            "query_ms_p50": round(float(np.percentile(ms, 50)), 2),
            "query_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "errors": dict(errors),
            "n": args.n,
        }


def key_values(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"eval_offgrid: {option} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Off-grid slide crops found at their place (k = {K})")
    heads = ["recipe", "tiles", "KiB", "build s", "found", "224/448/672", "top10", "p50 ms",
             "p99 ms", "errors", "n"]  # fmt: skip
    for h in heads:
        table.add_column(h, no_wrap=True, justify="left" if h == "recipe" else "right")
    for r in results:
        by = "/".join("-" if v is None else f"{v:.2f}" for v in r["found_rate_by_size"].values())
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        table.add_row(
            r["recipe"], str(r["tiles"]), f"{r['bytes_on_disk'] / 1024:.0f}",
            str(r["build_seconds"] or "reused"), f"{r['found_rate']:.3f}", by,
            f"{r['in_top10_rate']:.3f}", f"{r['query_ms_p50']:.1f}", f"{r['query_ms_p99']:.1f}",
            errors, str(r["n"]),
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # piped: no truncation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="stats-lsh32", help="comma separated")
    parser.add_argument("--weights", action="append", default=[], metavar="RECIPE=PATH")
    parser.add_argument("--search-kw", action="append", default=[], metavar="KEY=JSON_VALUE")
    parser.add_argument("--stride", type=int, default=None, help="override the tile stride")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "cbir-offgrid"))
    parser.add_argument("--reuse", action="store_true", help="reuse a bundle in --workdir")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    missing = [str(p) for p in SLIDES if not p.is_file()]
    if missing:
        print(f"eval_offgrid: {DATA} not found ({', '.join(missing)})", file=sys.stderr)
        raise SystemExit(2)
    weights = {k: Path(v) for k, v in key_values(args.weights, "--weights").items()}
    kw = key_values(args.search_kw, "--search-kw")
    args.search_kw = {k: json_or_str(v) for k, v in kw.items()}
    meter = CpuMeter()
    results = [evaluate(r, weights.get(r), args) for r in args.recipes.split(",") if r]
    if args.json:
        other = meter.other_seconds()  # CPU seconds other processes took meanwhile
        out = {"seed": args.seed, "search_kw": args.search_kw, "other_cpu_seconds": other}
        print(json.dumps({**out, "results": results}))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
