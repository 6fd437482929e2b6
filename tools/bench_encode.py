#!/usr/bin/env python
"""Network throughput benchmark for cbir: tiles/s of each network descriptor alone.

What it measures
    For each recipe given (default: the network recipes that run without trained
    weights: effnet-flat, cnn-flat, vae-flat, delf-hnsw; effnet-d4-flat is 8 times
    effnet-flat), on the CPU and on CUDA when there is one, its
    `TilePipeline(recipe, device=...)` describes `--tiles` random 224 px tiles already in
    memory (no slide reading), in the descriptor's own batches, after one warm-up batch:

    * tiles_per_s: with the networks as cbir loads them (channels-last weights,
      `torch.inference_mode`);
    * tiles_per_s_contiguous: the same with the weights put back in the default
      (contiguous) layout, to show what channels-last gives on this device;
    * max_abs_difference between the two outputs (layouts should not change results).

    With `--build SLIDE`, a bundle of SLIDE at `--build-magnification` (comma-separated
    magnifications) is also built with the first recipe and its whole-build tiles/s
    reported next to the network's: how far the build is from being bounded by the
    network alone. On CUDA the build gathers tiles for the GPU (cbir.slides.tile_batcher), and
    `gathered` reports its batches, tiles a batch, seconds in the network call and CUDA
    graphs captured; `--switch-interval` sets Python's switch interval while it gathers.

    On CUDA, network descriptors replay CUDA graphs (cbir.nn.cuda_graphs) unless
    CBIR_CUDA_GRAPHS=0; each row says whether they did (`cuda_graphs`).

    A name `backbone:NAME` measures a registered backbone's final pooled features alone
    (e.g. `backbone:resnet50`, randomly initialised when it has no packaged weights: the
    speed does not depend on the weights).

    Batches: the descriptor's own batch size on CPU; on CUDA the batch a GPU build gathers
    (`cbir.slides.tile_batcher.GPU_BATCH`, 512), as `build-index` runs it there. `--batch-sizes`
    measures other sizes (comma-separated).

    CUDA runs report the card's name. `--precision fp32,auto` measures each network in
    float32 and with cbir's default (float16 autocast on CUDA: `cbir.nn.device.inference`;
    on CPU auto is float32); `--device` picks one device instead of both. Tiles go to
    the GPU as uint8 and are normalised there.

Run (from the repository root, with the venv active)
    python tools/bench_encode.py --json
    python tools/bench_encode.py --recipes effnet-flat --tiles 512 --json
    python tools/bench_encode.py --device cuda --precision fp32,auto --tiles 4096 --json
    python tools/bench_encode.py --device cuda --recipes backbone:resnet50 --batch-sizes 256,1024
    python tools/bench_encode.py --recipes effnet-flat \\
        --build ~/.cache/cbir-bench/bench-40x-40000x30000-jpeg-s0-v1.svs --json
One JSON object goes to stdout with --json (a short summary otherwise); logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import benchutil
import numpy as np

DEFAULT_RECIPES = ("effnet-flat", "cnn-flat", "vae-flat", "delf-hnsw")


def log(msg: str) -> None:
    benchutil.log("bench_encode", msg)


def modules_of(descriptor: object) -> list:
    """The torch modules a descriptor holds (its attributes)."""
    import torch

    return [v for v in vars(descriptor).values() if isinstance(v, torch.nn.Module)]


def timed(pipeline: object, tiles: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds to describe `tiles` (after a warm-up batch) and the descriptors."""
    warm = getattr(pipeline.descriptor, "batch_size", 8)  # type: ignore[attr-defined]
    pipeline.describe(tiles[:warm])  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    x = pipeline.describe(tiles)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, x


def graphs_used(pipeline: object) -> bool:
    """Whether the pipeline's descriptor replays CUDA graphs (cbir.nn.cuda_graphs)."""
    from cbir.nn.cuda_graphs import graphs_enabled

    graphs = getattr(pipeline.descriptor, "graphs", None)  # type: ignore[attr-defined]
    return graphs is not None and graphs_enabled(graphs.device)


def recipe_of(name: str) -> object:
    """A recipe by name, or for `backbone:NAME` effnet-flat's with that backbone's final
    pooled features as the descriptor (no per-layer blocks)."""
    from cbir.recipes import load_recipe

    if not name.startswith("backbone:"):
        return load_recipe(name)
    base = load_recipe("effnet-flat")
    params = {"backbone": name.removeprefix("backbone:"), "final": True}
    return base.model_copy(
        update={
            "name": name,
            "descriptor": base.descriptor.model_copy(update={"params": params}),
            "encoder": base.encoder.model_copy(update={"params": {"standardize": False}}),
        }
    )


def network_rates(
    name: str, tiles: np.ndarray, device: str, precision: str = "auto", batch: int | None = None
) -> dict[str, object]:
    import os

    import torch

    from cbir.nn.device import PRECISION_ENV, autocast_dtype
    from cbir.pipeline import TilePipeline
    from cbir.slides.tile_batcher import GPU_BATCH

    os.environ[PRECISION_ENV] = precision
    pipeline = TilePipeline(recipe_of(name), device=device)  # type: ignore[arg-type]
    batched = hasattr(pipeline.descriptor, "batch_size")
    if batch is None and batched and torch.device(device).type == "cuda":
        batch = GPU_BATCH  # what a GPU build's batcher gives the network
    if batch is not None and batched:
        pipeline.descriptor.batch_size = batch  # type: ignore[attr-defined]
    seconds, x = timed(pipeline, tiles)
    for module in modules_of(pipeline.descriptor):
        module.to(memory_format=torch.contiguous_format)
    if getattr(pipeline.descriptor, "graphs", None) is not None:
        pipeline.descriptor.graphs.reset()  # type: ignore[attr-defined]  (new weight addresses)
    seconds_c, x_c = timed(pipeline, tiles)
    row = {
        "recipe": name,
        "precision": precision,
        "autocast": str(autocast_dtype(torch.device(device))).removeprefix("torch."),
        "cuda_graphs": graphs_used(pipeline),
        "batch_size": getattr(pipeline.descriptor, "batch_size", None),
        "dim": int(x.shape[1]),
        "tiles": len(tiles),
        "tiles_per_s": round(len(tiles) / seconds, 1),
        "tiles_per_s_contiguous": round(len(tiles) / seconds_c, 1),
        "max_abs_difference": float(np.abs(x - x_c).max()),
    }
    log(
        f"{name} {precision} batch {row['batch_size']}: {row['tiles_per_s']} tiles/s "
        f"({row['tiles_per_s_contiguous']} contiguous)"
    )
    return row


def gathered_stats(gathered: list[tuple[object, object]]) -> dict[str, object] | None:
    """What the GPU batchers of a build did: batches, tiles a batch, seconds in the network
    call, and CUDA graphs captured (None: tiles were not gathered, e.g. on CPU)."""
    if not gathered:
        return None
    batches = sum(b.batches for b, _ in gathered)  # type: ignore[attr-defined]
    tiles = sum(b.tiles for b, _ in gathered)  # type: ignore[attr-defined]
    graphs = list({id(g): g for _, d in gathered if (g := getattr(d, "graphs", None))}.values())
    return {
        "batches": batches,
        "tiles_per_batch": round(tiles / max(batches, 1), 1),
        "network_call_seconds": round(sum(b.fn_seconds for b, _ in gathered), 3),  # type: ignore[attr-defined]
        "graph_replays": sum(g.replays for g in graphs),
        "graph_captures": sum(g.captures for g in graphs),
        "graph_capture_seconds": round(sum(g.capture_seconds for g in graphs), 3),
    }


class StackSampler:
    """Samples the Python stacks of threads named `prefix`* every `interval_s` while open:
    where the GPU batcher thread spends its wall time (a thread waiting for the GIL shows
    the line it waits at). `top()` -> the most frequent stacks (innermost first)."""

    def __init__(self, prefix: str | None = None, interval_s: float = 0.005) -> None:
        import collections
        import threading

        from cbir.slides.tile_batcher import BATCHER_THREAD

        prefix = prefix or BATCHER_THREAD
        self.prefix, self.interval_s = prefix, interval_s
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        import threading

        while not self._stop.wait(self.interval_s):
            frames = sys._current_frames()
            for t in threading.enumerate():
                frame = frames.get(t.ident or -1)
                if not t.name.startswith(self.prefix) or frame is None:
                    continue
                stack = []
                while frame is not None and len(stack) < 5:
                    code = frame.f_code
                    stack.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
                    frame = frame.f_back
                self.counts[" < ".join(stack)] += 1

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 20) -> str:
        total = sum(self.counts.values()) or 1
        lines = [f"{self.prefix} samples: {total} every {self.interval_s * 1000:g} ms"]
        lines += [f"{100 * c / total:5.1f}%  {s}" for s, c in self.counts.most_common(n)]
        return "\n".join(lines)


def profiled(path: Path | None) -> object:
    """Over the block: a torch.profiler (CPU ops of this thread; on CUDA, with CUPTI, the
    kernels and CUDA runtime calls of every thread) and a StackSampler of the GPU batcher
    thread; writes both tables to `path`. A null context without a path."""
    import contextlib

    import torch

    if path is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def run() -> object:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as prof, StackSampler() as sampler:
            yield
        table = prof.key_averages()
        text = [sampler.top(), table.table(sort_by="self_cpu_time_total", row_limit=40)]
        if torch.cuda.is_available():
            text.append(table.table(sort_by="self_device_time_total", row_limit=25))
        path.write_text("\n\n".join(text))
        log(f"profile written to {path}")

    return run()


def build_rate(
    name: str,
    slide: Path,
    magnifications: tuple[float, ...],
    device: str,
    readers: int | None = None,
    profile: Path | None = None,
) -> dict[str, object]:
    import cbir
    import cbir.describe
    import cbir.slides.tile_batcher
    from cbir.recipes import Recipe

    base = recipe_of(name)
    assert isinstance(base, Recipe)
    tiling = base.tiling.model_copy(update={"magnifications": magnifications})
    recipe = base.model_copy(update={"tiling": tiling})
    gathered: list[tuple[object, object]] = []  # (batcher, descriptor) of a GPU build
    gathering = cbir.describe.gathering

    def spy(pipeline: object) -> object:
        batcher = gathering(pipeline)
        gathered.append((batcher, pipeline.descriptor))  # type: ignore[attr-defined]
        return batcher

    cbir.describe.gathering = spy  # type: ignore[assignment]
    gpu_readers = cbir.describe.GPU_READERS
    if readers:
        cbir.describe.GPU_READERS = readers
    try:
        with tempfile.TemporaryDirectory() as tmp, profiled(profile):  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            report = cbir.build_index(
                [slide], Path(tmp) / "idx", recipe, device=device, untrained=True
            )
            seconds = time.perf_counter() - t0
    finally:
        cbir.describe.gathering = gathering
        cbir.describe.GPU_READERS = gpu_readers
    row = {
        "recipe": name,
        "slide": str(slide),
        "magnifications": list(magnifications),
        "tiles": report.tiles_total,
        "tiles_per_s": round(report.tiles_total / seconds, 1),
        "stage_seconds": report.stage_seconds,
        "gathered": gathered_stats(gathered),
    }
    if gathered:
        row["switch_interval_s"] = cbir.slides.tile_batcher.GPU_SWITCH_INTERVAL_S
        row["readers"] = readers or gpu_readers
    at = ",".join(f"{m:g}" for m in magnifications)
    log(f"build {name} at {at}x: {row['tiles_per_s']} tiles/s")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES))
    p.add_argument("--tiles", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda if any)")
    p.add_argument("--build", type=Path, default=None, help="also build a bundle of SLIDE")
    p.add_argument(
        "--build-magnification", default="20", help="comma-separated magnifications to build at"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-sizes",
        default="",
        help="comma-separated batch sizes to measure (default: the descriptor's own on CPU, "
        "the GPU build's gathered batch on CUDA)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        help="comma-separated CBIR_PRECISION values to measure (auto, fp32, fp16, bf16); "
        "auto is float16 autocast on CUDA, float32 on CPU",
    )
    p.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="Python's switch interval (s) while a GPU build gathers tiles "
        "(cbir.slides.tile_batcher.GPU_SWITCH_INTERVAL_S; 0: leave Python's 0.005)",
    )
    p.add_argument(
        "--readers", type=int, default=None, help="reader threads of a GPU build (default 16)"
    )
    p.add_argument(
        "--profile", type=Path, default=None, help="write a torch.profiler table of the build"
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    import cbir.slides.tile_batcher
    from cbir.nn.device import resolve_device

    if args.switch_interval is not None:
        cbir.slides.tile_batcher.GPU_SWITCH_INTERVAL_S = args.switch_interval or None

    devices = (
        [resolve_device(args.device)]
        if args.device
        else [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    )
    batches = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
    rng = np.random.default_rng(args.seed)
    tiles = rng.integers(0, 256, (args.tiles, 224, 224, 3), dtype=np.uint8)
    rows = []
    for device in devices:
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        for r in filter(None, args.recipes.split(",")):
            for precision in filter(None, args.precision.split(",")):
                for batch in batches:
                    rate = network_rates(r, tiles, str(device), precision, batch)
                    rows.append({"device": str(device), "card": card, **rate})
    device = devices[-1]
    out: dict[str, object] = {
        "torch_threads": torch.get_num_threads(),
        "networks": rows,
    }
    if args.build is not None:
        out["build"] = build_rate(
            rows[0]["recipe"],
            args.build,
            tuple(float(m) for m in args.build_magnification.split(",") if m),
            str(device),  # type: ignore[arg-type]
            args.readers,
            args.profile,
        )
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in rows:
            print(
                f"{r['recipe']} {r['precision']} batch {r['batch_size']}: "
                f"{r['tiles_per_s']} tiles/s on {r['card']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
