#!/usr/bin/env python
"""HTTP latency of `cbir serve`: search p50/p99 on a warm server and Deep Zoom tile time.

    python tools/bench_serve.py --json [--n 1000000] [--queries 200]

Search: a stats-lsh32 bundle of `--n` synthetic tiles (tools/bench_search.py's
collection, written through the real bundle code path) is served by `cbir serve` in a
subprocess on 127.0.0.1; one HTTP client (keep-alive) posts a 224 px PNG tissue tile
(cut from cbir's sample image) as multipart `/search` with k = 10, `--warmup` times, then
`--queries` times: wall time of each request as the client sees it (upload, decode,
tissue check, describe, encode, Faiss, LMDB, JSON).
Deep Zoom: a bundle of the generated sample slide (a 3-level pyramidal TIFF) is served
the same way; every tile of its pyramid's three highest levels is fetched once cold and
once warm; p50/p99 per tile.
Mixed load (`--clients 8,24`): a bundle of two generated pyramidal slides is served, on a
fresh server for each count; `--rounds` times, one client posts searches only (the
single-client search p50), then that many clients (one keep-alive connection each) send
requests, each a multipart search with probability `--search-share`, else a random tile
of the three finest Deep Zoom levels; the two windows split `--seconds`: p50/p99 of
search and tile, their ratio to one client's, non-200 answers, and the server's peak RSS
(VmHWM of /proc/<pid>/status).

    python tools/bench_serve.py --sections mixed --clients 8,24 --seconds 60 [--processes 2]
        [--workers N]   # cbir serve's threads for tiles and regions (default 8)
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from bench_search import build_bundle  # same folder
from benchutil import log
from PIL import Image
from serve_traffic import (
    Traffic,
    run_client_processes,
    run_clients,
    tile_urls,
    two_slide_bundle,
)
from serve_traffic import ms as traffic_ms

import cbir
from cbir.serve.process import free_port, start_server, stop_server, tree_peak_rss_mb
from cbir.slides.sample import sample_image, write_pyramidal_tiff


def query_png() -> bytes:
    image = sample_image()
    h, w = image.shape[:2]
    tile = image[h // 2 - 112 : h // 2 + 112, w // 2 - 112 : w // 2 + 112]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buf, "PNG")
    return buf.getvalue()


def bench_search(bundle: Path, queries: int, warmup: int) -> dict[str, object]:
    proc, url = start_server(bundle, free_port())
    try:
        png = query_png()
        times = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(warmup + queries):
                t0 = time.perf_counter()
                r = client.post(
                    "/search", files={"image": ("q.png", png, "image/png")}, data={"k": "10"}
                )
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                if i >= warmup:
                    times.append(elapsed)
            server_seconds = r.json()["seconds"]
        return {**traffic_ms(times), "last_server_side_ms": round(server_seconds * 1000, 3)}
    finally:
        stop_server(proc)


def bench_deep_zoom(tmp: Path) -> dict[str, object]:
    slide = write_pyramidal_tiff(tmp / "sample.tif", sample_image(), mpp=0.25)
    bundle = tmp / "dz-idx"
    cbir.build_index([slide], bundle, "stats-lsh32")
    proc, url = start_server(bundle, free_port())
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/slides/1.dzi").raise_for_status()
            top = 0
            while client.get(f"/slides/1_files/{top + 1}/0_0.jpeg").status_code == 200:
                top += 1
            addresses, cold = [], []

            def fetch(level: int, col: int, row: int) -> bool:
                t0 = time.perf_counter()
                ok = client.get(f"/slides/1_files/{level}/{col}_{row}.jpeg").status_code == 200
                if ok:
                    cold.append(time.perf_counter() - t0)
                    addresses.append((level, col, row))
                return ok

            for level in range(max(0, top - 2), top + 1):
                col = 0
                while fetch(level, col, 0):
                    row = 1
                    while fetch(level, col, row):
                        row += 1
                    col += 1
            warm = []
            for level, col, row in addresses:
                t0 = time.perf_counter()
                client.get(f"/slides/1_files/{level}/{col}_{row}.jpeg").raise_for_status()
                warm.append(time.perf_counter() - t0)
        return {
            "tiles": len(addresses),
            "first_fetch": traffic_ms(cold),
            "second_fetch": traffic_ms(warm),
        }
    finally:
        stop_server(proc)


def bench_mixed(
    tmp: Path,
    counts: list[int],
    seconds: float,
    share: float,
    processes: int = 1,
    client_processes: bool = False,
    workers: int | None = None,
    rounds: int = 6,
) -> dict[str, object]:
    """For each client count, on a fresh server of `processes` processes: `rounds` rounds,
    each one client posting searches only for `seconds / rounds / 2`, then `count` concurrent
    mixed clients (threads of this process, or one process each) for as long. Solo and
    loaded windows alternate on the same server so that a drift of the machine's speed
    (single-client p50 varied 5.3-9.1 ms between runs minutes apart) falls on both:
    latencies pooled over the rounds, their ratio, each round's ratio, statuses and the
    server's peak RSS (the sum over its processes)."""
    bundle = two_slide_bundle(tmp)
    out: dict[str, object] = {
        "processes": processes,
        "client_processes": client_processes,
        "workers": workers,
        "rounds": rounds,
        "window_seconds": seconds / rounds / 2,
    }
    extra = ["--workers", str(workers)] if workers else []
    window = seconds / rounds / 2
    clients_run = run_client_processes if client_processes else run_clients
    for clients in counts:
        proc, url = start_server(
            bundle, free_port(), "--no-log-requests", "--processes", str(processes), *extra
        )
        try:
            urls = tile_urls(url, 1) + tile_urls(url, 2)
            run_clients(url, clients, 3, share, urls, seed=99)  # warm up
            solo: list[float] = []
            loaded = Traffic()
            per_round = []
            for r in range(rounds):
                one = run_clients(url, 1, window, 1.0, urls, seed=1000 + r)
                many = clients_run(url, clients, window, share, urls, seed=r)
                solo += one.times["search"]
                for kind, times in many.times.items():
                    loaded.times[kind] += times
                loaded.statuses.update(one.statuses + many.statuses)
                loaded.errors += one.errors + many.errors
                per_round.append(
                    float(np.median(many.times["search"]) / np.median(one.times["search"]))
                )
            single, search = traffic_ms(solo), traffic_ms(loaded.times["search"])
            out[f"clients_{clients}"] = {
                "single_client_search": single,
                "search": search,
                "tile": traffic_ms(loaded.times["tile"]),
                "search_p50_ratio": round(search["p50_ms"] / single["p50_ms"], 2),
                "search_p50_ratio_per_round": [round(x, 2) for x in per_round],
                "statuses": {str(k): v for k, v in sorted(loaded.statuses.items())},
                "transport_errors": len(loaded.errors),
                "server_peak_rss_mb": round(tree_peak_rss_mb(proc.pid), 1),
                "server_alive": proc.poll() is None,
            }
            log("bench_serve", f"{clients} client(s): {out[f'clients_{clients}']}")
        finally:
            stop_server(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sections", default="search,zoom,mixed")
    parser.add_argument("--clients", default="8,24", help="Mixed load: client counts.")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="Mixed load: per count, solo + loaded."
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="Mixed load: solo/loaded alternations."
    )
    parser.add_argument("--search-share", type=float, default=0.2)
    parser.add_argument("--processes", type=int, default=1, help="Mixed load: cbir serve's.")
    parser.add_argument(
        "--client-processes",
        action="store_true",
        help="Mixed load: each client its own process (default: threads of this one).",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="Mixed load: cbir serve --workers (tiles)."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "search" in sections:
            bundle = Path(tmp) / "idx"
            log("bench_serve", f"building a stats-lsh32 bundle of {args.n} synthetic tiles")
            build = build_bundle(bundle, "stats-lsh32", args.n, seed=0)
            log("bench_serve", "timing /search")
            out.update(tiles=args.n, build_seconds=build["build_seconds"])
            out["search"] = bench_search(bundle, args.queries, args.warmup)
        if "zoom" in sections:
            log("bench_serve", "timing Deep Zoom tiles")
            out["deep_zoom_tile"] = bench_deep_zoom(Path(tmp))
        if "mixed" in sections:
            counts = [int(c) for c in args.clients.split(",") if c]
            mixed_dir = Path(tmp) / "mixed"
            mixed_dir.mkdir()
            out["mixed"] = bench_mixed(
                mixed_dir,
                counts,
                args.seconds,
                args.search_share,
                args.processes,
                args.client_processes,
                args.workers,
                args.rounds,
            )
    out["protocol"] = (
        "HTTP clients on 127.0.0.1, one keep-alive connection each; multipart 224 px PNG, "
        f"k=10; mixed: {args.search_share:g} searches, the rest Deep Zoom tiles"
    )
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
