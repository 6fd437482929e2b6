"""Mixed `cbir serve` traffic for tools/bench_serve.py and tools/bench_serve_publish.py:
a bundle of two generated pyramidal slides, Deep Zoom tile addresses, and client threads
that fetch tiles and post searches, recording each request's status and wall time."""

from __future__ import annotations

import io
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import cbir
from cbir.slides.sample import sample_image, write_pyramidal_tiff

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"


def two_slide_bundle(tmp: Path) -> Path:
    """A stats-lsh32 bundle of the sample slide (40x) and its 90-degree rotation (20x)."""
    a = write_pyramidal_tiff(tmp / "generated.tif", sample_image(), mpp=0.25)
    rot = np.ascontiguousarray(np.rot90(sample_image()))
    b = write_pyramidal_tiff(tmp / "second.tif", rot, mpp=0.5)
    root = tmp / "idx"
    cbir.build_index([a, b], root, "stats-lsh32")
    return root


def query_png() -> bytes:
    """A 224 px tissue tile of the sample image (x 448, y 224: the tests' query), as PNG."""
    tile = sample_image()[224:448, 448:672]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile)).save(buf, "PNG")
    return buf.getvalue()


def tile_urls(url: str, slide_id: int, levels: int = 3) -> list[str]:
    """Every tile URL of the `levels` finest Deep Zoom levels of a slide."""
    xml = httpx.get(f"{url}/slides/{slide_id}.dzi", timeout=60).text
    size = ET.fromstring(xml).find(f"{DZ}Size")
    assert size is not None
    dims = [(int(size.get("Width", 0)), int(size.get("Height", 0)))]
    while dims[-1] != (1, 1):
        dims.append((max(1, (dims[-1][0] + 1) // 2), max(1, (dims[-1][1] + 1) // 2)))
    dims.reverse()
    return [
        f"/slides/{slide_id}_files/{level}/{c}_{r}.jpeg"
        for level in range(len(dims) - levels, len(dims))
        for c in range(-(-dims[level][0] // 254))
        for r in range(-(-dims[level][1] // 254))
    ]


@dataclass
class Traffic:
    """What the clients saw: seconds per request kind, status counts, transport errors."""

    times: dict[str, list[float]] = field(default_factory=lambda: {"search": [], "tile": []})
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_clients(
    url: str,
    clients: int,
    seconds: float | None,
    search_share: float,
    urls: list[str],
    stop: threading.Event | None = None,
    seed: int = 0,
) -> Traffic:
    """`clients` threads, each with one keep-alive connection, for `seconds` (or until
    `stop` is set): a multipart search (k=10) with probability `search_share`, else one
    random tile of `urls`."""
    traffic, png = Traffic(), query_png()
    stop = stop or threading.Event()
    end = time.monotonic() + seconds if seconds is not None else float("inf")

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set() and time.monotonic() < end:
                kind = "search" if rng.random() < search_share else "tile"
                t0 = time.perf_counter()
                try:
                    if kind == "search":
                        files = {"image": ("q.png", png, "image/png")}
                        r = c.post("/search", files=files, data={"k": "10"})
                    else:
                        r = c.get(rng.choice(urls))
                except httpx.HTTPError as exc:
                    with traffic.lock:
                        traffic.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.2)
                    continue
                elapsed = time.perf_counter() - t0
                with traffic.lock:
                    traffic.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        traffic.times[kind].append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return traffic


def ms(seconds: list[float]) -> dict[str, float]:
    """p50/p99 in milliseconds and the count."""
    if not seconds:
        return {"n": 0}
    a = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "n": len(a),
    }


def _one_client_process(args: tuple[str, float, float, list[str], int]) -> Traffic:
    url, seconds, search_share, urls, seed = args
    traffic = run_clients(url, 1, seconds, search_share, urls, seed=seed)
    traffic.lock = None  # type: ignore[assignment]  # a lock does not pickle
    return traffic


def run_client_processes(
    url: str, clients: int, seconds: float, search_share: float, urls: list[str], seed: int = 0
) -> Traffic:
    """run_clients with each client in its own process (one thread each), so that the
    clients do not queue on one interpreter lock: what the server's latency is when its
    clients are separate programs (browsers), still on this machine's cores."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(url, seconds, search_share, urls, seed * 1000 + i) for i in range(clients)]
    out = Traffic()
    with ProcessPoolExecutor(clients) as pool:
        for part in pool.map(_one_client_process, jobs):
            for kind, times in part.times.items():
                out.times[kind].extend(times)
            out.statuses.update(part.statuses)
            out.errors.extend(part.errors)
    return out
