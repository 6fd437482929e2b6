#!/usr/bin/env python
"""Peak memory of `cbir search` for the largest accepted queries and the refusal of
larger ones (issue 21, item 5).

    python tools/bench_query_memory.py [--recipe stats-lsh32] [--json]

A bundle of the generated sample slide is built with `--recipe`. Query files are
written with PIL (tissue-coloured noise): the largest accepted queries (20 x 20 tiles
as PNG and JPEG, a 1 x 400-tile strip), a square at the pixel limit
(cbir.search.query.MAX_QUERY_PIXELS; decoded, then refused for its tile count), and over the
limit a 20000 x 20000 px PNG and a 60000 x 60000 px PNG (a real header; its pixel data
is cut short, since the header is all cbir reads before refusing). Each query is one
`cbir search IDX FILE -k 5 --json` in a fresh process; its peak RSS is the child's ru_maxrss
(os.wait4), its exit code and the first line of stderr are reported. Goal: every
accepted query peaks under 1 GB; every refused one exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import cbir
from cbir.search.query import MAX_QUERY_PIXELS
from cbir.slides.sample import sample_image, write_pyramidal_tiff


def tissue_noise(w: int, h: int) -> Image.Image:
    """(h, w) pink-purple noise, generated in strips so the tool itself stays small."""
    rng = np.random.default_rng(0)
    im = Image.new("RGB", (w, h))
    step = max(1, 4_000_000 // w)
    for y in range(0, h, step):
        n = min(step, h - y)
        strip = rng.normal((190, 120, 170), 25, (n, w, 3)).clip(0, 255).astype(np.uint8)
        im.paste(Image.fromarray(strip), (0, y))
    return im


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose IHDR says w x h RGB, followed by a short IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def run(bundle: Path, query: Path) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-c",
        "from cbir.cli.main import app; app()",
        "search",
        str(bundle),
        str(query),
        "-k",
        "5",
        "--json",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    lines = [line for line in err.splitlines() if line.strip()]
    return {
        "query": query.name,
        "exit": os.waitstatus_to_exitcode(status),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 2),
        "stderr_lines": len(lines),
        "stderr": lines[0][:200] if lines else "",
    }


def build_bundle(root: Path, recipe: str) -> None:
    """The bundle of the generated sample slide at root/idx (in a child process, like
    the query files)."""
    slide = write_pyramidal_tiff(root / "s.tif", sample_image(), mpp=0.25)
    cbir.build_index([slide], root / "idx", recipe, untrained=True)


def write_queries(root: Path) -> list[Path]:
    """The query files (written in a child process, so that this process stays small:
    a forked child's ru_maxrss starts from its parent's)."""
    side = int(MAX_QUERY_PIXELS**0.5)
    tiles20 = 20 * 224
    big = tissue_noise(tiles20, tiles20)
    big.save(root / "accepted-20x20-tiles.png", compress_level=1)
    big.save(root / "accepted-20x20-tiles.jpg", quality=90)
    tissue_noise(400 * 224, 300).save(root / "accepted-1x400-tiles.png")
    tissue_noise(side, side).save(root / f"at-pixel-limit-{side}.png", compress_level=1)
    tissue_noise(20000, 20000).save(root / "over-20000.png", compress_level=1)
    png_header_only(root / "over-60000-header.png", 60000, 60000)
    return sorted(root.glob("*.png")) + sorted(root.glob("*.jpg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="stats-lsh32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cbir-qmem-") as tmp:
        root = Path(tmp)
        bundle = root / "idx"
        (root / "q").mkdir()
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pool.apply(build_bundle, (root, args.recipe))
            queries = pool.apply(write_queries, (root / "q",))
        results = []
        for q in queries:
            with Image.open(q) as im:
                size = im.size
            results.append(run(bundle, q) | {"pixels": size})
    out = {"recipe": args.recipe, "max_query_pixels": MAX_QUERY_PIXELS, "runs": results}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            print(r)


if __name__ == "__main__":
    main()
