"""CUDA graphs for network descriptors: one replay per batch instead of hundreds of
kernel launches from Python.

Why: a GPU build decodes tiles on many reader threads while one thread runs the network,
and every PyTorch op releases the GIL and must win it back from the readers (on a CPU,
one busy Python thread makes a launch-bound EfficientNet forward 220 times slower). On an
H100 a gathered effnet-flat build ran at 155 tiles/s launching eagerly, against 16,000
for the network alone, and at 359 tiles/s replaying graphs. A captured graph replays the
whole forward (normalisation, network, pooling) in one call.

Graphs are captured lazily, one per batch bucket (the next power of two >= the batch, at
least MIN_GRAPH_BATCH) and precision (CBIR_PRECISION), into one memory pool per network
(replays never overlap and each reads only its own static input, so the buckets can share
their intermediate buffers), on the network's own device and capture stream, one capture
at a time in the process; they are replayed under a lock (static buffers: one batch at a
time). Batches smaller than MIN_GRAPH_BATCH (a query's tile) run eagerly.
`CBIR_CUDA_GRAPHS=0` turns graphs off.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from cbir.nn.cnn import host_tiles
from cbir.nn.device import autocast_dtype

#: Environment variable: "0" runs network descriptors eagerly on CUDA (default "1").
GRAPHS_ENV = "CBIR_CUDA_GRAPHS"
#: Batches below this run eagerly (capturing a graph for a query's few tiles costs more
#: than it saves); buckets start here.
MIN_GRAPH_BATCH = 16
#: CUDA allows one stream capture at a time in a process.
_CAPTURE_LOCK = threading.Lock()


def bucket(n: int) -> int:
    """The graph batch size that serves n tiles: the next power of two, at least
    MIN_GRAPH_BATCH."""
    return max(MIN_GRAPH_BATCH, 1 << max(0, n - 1).bit_length())


def graphs_enabled(device: torch.device) -> bool:
    """Whether network descriptors on `device` replay CUDA graphs."""
    return device.type == "cuda" and os.environ.get(GRAPHS_ENV, "1") != "0"


Captured = tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]


class GraphedForward:
    """`forward(x)` for (b, t, t, 3) uint8 tiles on the GPU -> (b, d), replayed from CUDA
    graphs. Call with (n, t, t, 3) uint8 host tiles -> (n, d) float32 on the GPU (a copy:
    the next replay overwrites the graph's output)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device):
        self.forward = forward
        self.device = device
        self._graphs: dict[tuple[object, ...], Captured] = {}
        self._lock = threading.Lock()
        self._stream: torch.cuda.Stream | None = None  # capture stream, made on first capture
        self._pool: object = None  # the graphs' shared memory pool
        self.replays = 0  # batches served, graphs captured, seconds capturing (reports)
        self.captures = 0
        self.capture_seconds = 0.0

    def reset(self) -> None:
        """Drop the captured graphs (they hold the addresses of the weights: call after
        changing the network's parameters or their layout)."""
        with self._lock:
            self._graphs.clear()

    def _capture(self, shape: tuple[int, ...], dtype: torch.dtype | None) -> Captured:
        # autocast as `inference` gives it, without the weight-cast cache: casts cached
        # outside the capture would be freed under the graph
        def context() -> torch.autocast:
            return torch.autocast(
                "cuda", dtype or torch.float32, enabled=dtype is not None, cache_enabled=False
            )

        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
            self._pool = torch.cuda.graph_pool_handle()
        side = self._stream
        static_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode(), context():
            for _ in range(2):  # warm-up: cuDNN/cuBLAS handles and workspaces
                self.forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may allocate (eager small batches) during capture
        with _CAPTURE_LOCK, torch.inference_mode(), context():
            with torch.cuda.graph(
                graph, pool=self._pool, stream=side, capture_error_mode="thread_local"
            ):
                static_out = self.forward(static_in)
        return graph, static_in, static_out

    def __call__(self, tiles: np.ndarray) -> torch.Tensor:
        n = len(tiles)
        shape = (bucket(n), *tiles.shape[1:])
        dtype = autocast_dtype(self.device)
        with self._lock, torch.cuda.device(self.device), torch.inference_mode():
            host = host_tiles(tiles).pin_memory()
            key = (*shape, dtype)
            if key not in self._graphs:
                t0 = time.perf_counter()
                self._graphs[key] = self._capture(shape, dtype)
                self.captures += 1
                self.capture_seconds += time.perf_counter() - t0
            graph, static_in, static_out = self._graphs[key]
            static_in[:n].copy_(host, non_blocking=True)
            graph.replay()
            self.replays += 1
            return static_out[:n].to(torch.float32, copy=True)


def graphed(
    forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> GraphedForward | None:
    """A GraphedForward of `forward` on `device` (CUDA), else None. Whether it is used is
    decided per call (`graphs_enabled`, batch size): see `run_batched`."""
    return GraphedForward(forward, device) if device.type == "cuda" else None
