#!/usr/bin/env python
"""`cbir serve` under writers: readers fetch Deep Zoom tiles and post searches while the
real CLI publishes `--cycles` new generations; reports server deaths and answers other
than 200 (and 404, which a removed slide's tiles may get).

    python tools/bench_serve_publish.py --cycles 100 --readers 8 --json

A two-slide bundle (tools/serve_traffic.py) is served by `cbir serve` in a subprocess on
127.0.0.1. Each cycle runs one writer process: `cbir label IDX generated.tif cycle=i`,
except every 10th cycle, which runs `cbir remove IDX second.tif` and then `cbir add IDX
second.tif` (two publishes; the slide comes back under a new id, so tiles of its old id
answer 404 from then on). A server that dies is counted and started
again so the run goes on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from benchutil import log  # same folder
from serve_traffic import query_png, tile_urls, two_slide_bundle

from cbir.serve.process import CLI, free_port, start_server, stop_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = two_slide_bundle(Path(tmp))
        second = Path(tmp) / "second.tif"
        port = free_port()
        proc, url = start_server(bundle, port, "--no-log-requests")
        urls = tile_urls(url, 1) + tile_urls(url, 2)
        statuses: Counter[int] = Counter()
        bad: list[str] = []
        transport = Counter[str]()
        stop, lock = threading.Event(), threading.Lock()
        png = query_png()

        def reader(i: int) -> None:
            n = 0
            with httpx.Client(base_url=url, timeout=120) as c:
                while not stop.is_set():
                    n += 1
                    try:
                        if n % 5 == 0:
                            r = c.post("/search", files={"image": ("q.png", png, "image/png")})
                        else:
                            r = c.get(urls[(i * 7919 + n * 104729) % len(urls)])
                    except httpx.HTTPError as exc:
                        with lock:
                            transport[type(exc).__name__] += 1
                        time.sleep(0.2)
                        continue
                    with lock:
                        statuses[r.status_code] += 1
                        if r.status_code not in (200, 404):
                            bad.append(f"{r.request.url.path} {r.status_code} {r.text[:120]}")

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
        for t in threads:
            t.start()
        deaths, publishes, t0 = 0, 0, time.monotonic()
        try:
            for i in range(args.cycles):
                if i % 10 == 9:
                    cmds = [["remove", str(bundle), "second.tif"]]
                    cmds.append(["add", str(bundle), str(second)])
                else:
                    cmds = [["label", str(bundle), "generated.tif", f"cycle={i}"]]
                for cmd in cmds:
                    subprocess.run([*CLI, *cmd], check=True, capture_output=True, timeout=600)
                    publishes += 1
                if proc.poll() is not None:
                    deaths += 1
                    log("bench_serve_publish", f"the server died (exit {proc.returncode})")
                    proc, _ = start_server(bundle, port, "--no-log-requests")
                if i % 10 == 9:
                    log("bench_serve_publish", f"{i + 1} cycles, {dict(statuses)}")
        finally:
            stop.set()
            for t in threads:
                t.join()
            alive = proc.poll() is None
            stop_server(proc)
    out = {
        "cycles": args.cycles,
        "publishes": publishes,
        "readers": args.readers,
        "seconds": round(time.monotonic() - t0, 1),
        "server_deaths": deaths + (0 if alive else 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "other_than_200_404": len(bad),
        "examples": bad[:5],
        "transport_errors": dict(transport),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
