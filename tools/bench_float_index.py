#!/usr/bin/env python
"""Compressed float indexes for the pretrained features against exact Flat: recall@10,
latency, bytes per tile, build and add time.

What is measured
    `--n` unit vectors of 552 dimensions (effnet's descriptor size), synthetic: a 16-d
    latent through a random ReLU layer plus noise, standardised and L2-normalised (low
    intrinsic dimension like a network's features, not real slides). `--queries` stored
    vectors, moved slightly, are the queries; exact Flat gives their true 10 nearest.
    For each factory (`--factories`, cbir's `float_factory` strings, `{nlist}` resolved
    as a bundle resolves it), the index is trained (on a seeded sample, as cbir trains
    it) and filled, then each query runs alone, as `cbir search` runs one: top `--rerank`
    candidates from the index, reordered by exact squared L2 against the stored float32
    vectors (a bundle reads them from its grids; here an array in memory, so LMDB reads
    are not timed), top 10 kept. Reported: recall@10 against Flat, p50 / p99 ms of the
    whole single query (index + rerank) and of the index search alone, index bytes a
    tile (serialised), train and add seconds. Flat's own single-query p50 is the baseline.

Through the engine (`--engine`): the same vectors as 100 slides of 10,000 tiles written
as a bundle of the recipe `effnet-ivfpq` (its index config; the vectors stand for the
described tiles), opened with `cbir.open_index`, and the same queries through
`Index.search_codes` (tile query: IVF-PQ candidates, then exact L2 on the codes read
from the LMDB map, tile records, hits): p50 / p99, recall@10 of the hits against Flat,
bundle bytes a tile on disk, the index's bytes a tile, and the mapped file pages the
queries brought in.

With `--bundle PATH` the vectors are instead a float bundle's (e.g. an effnet-flat build
of real slides): `--queries` of its tiles, drawn with the seed, are held out of the index
and are the queries; their true 10 nearest are the nearest other tiles.

Run (from the repository root, with the venv active)
    python tools/bench_float_index.py --n 1000000 --json
    python tools/bench_float_index.py --bundle IDX --factories 'Flat,IVF{nlist},PQ138x4fs' --json
    python tools/bench_float_index.py --n 1000000 --factories '' --engine --json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from benchutil import log as _log

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cbir.index.float import FloatTileIndex, float_factory  # noqa: E402
from cbir.recipes import load_recipe  # noqa: E402

DIM = 552


def log(msg: str) -> None:
    _log("bench_float_index", msg)


def vectors(n: int, seed: int, dtype: str = "float32", chunk: int = 200_000) -> np.ndarray:
    """(n, DIM) unit vectors (see the module docstring), standardised with the mean and
    spread of the first chunk (the generator is the same everywhere); `dtype` float16
    halves the memory of 1e7 vectors (they are the stored vectors of the rerank)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, DIM)).astype(np.float32)
    x = np.empty((n, DIM), dtype)
    mean = std = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.standard_normal((m, 16)).astype(np.float32)
        v = np.maximum(z @ w1, 0) @ w2 + 2.0 * rng.standard_normal((m, DIM)).astype(np.float32)
        if mean is None:
            mean, std = v.mean(axis=0), v.std(axis=0)
        v = (v - mean) / std
        x[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return x


def bundle_vectors(path: Path) -> np.ndarray:
    """(n, DIM) float32: every indexed tile's vector as the float bundle at `path` stores
    it (its code grids: real described tiles)."""
    import cbir

    with cbir.open_index(path, device="cpu") as index:
        decode = index.bundle.pipeline.codes_from_bytes
        parts = [decode(g.codes[g.valid]) for g in index.bundle.meta.all_grids()]
    x = np.ascontiguousarray(np.concatenate(parts), np.float32)
    if x.shape[1] != DIM:
        raise SystemExit(f"bench_float_index: {path} holds {x.shape[1]}-d vectors, not {DIM}")
    return x


def exact_top10(x: np.ndarray, q: np.ndarray, chunk: int = 500_000) -> np.ndarray:
    """(nq, 10) ids of each query's 10 nearest rows of x by squared L2 (brute force in
    chunks, float32)."""
    best_d = np.full((len(q), 10), np.inf, np.float32)
    best_i = np.zeros((len(q), 10), np.int64)
    qn = (q * q).sum(axis=1)[:, None]
    for start in range(0, len(x), chunk):
        xc = np.asarray(x[start : start + chunk], np.float32)
        d = qn - 2.0 * (q @ xc.T) + (xc * xc).sum(axis=1)[None, :]
        d = np.concatenate([best_d, d], axis=1)
        i = np.concatenate([best_i, start + np.arange(len(xc))[None, :].repeat(len(q), 0)], axis=1)
        top = np.argpartition(d, 10, axis=1)[:, :10]
        best_d, best_i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now, MiB: (anonymous, file-backed). File-backed
    pages are mapped files (LMDB, Faiss files): clean, shared with the page cache and
    reclaimable."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            found[line.split(":")[0]] = int(line.split()[1]) / 1024
    return found.get("RssAnon", float("nan")), found.get("RssFile", float("nan"))


def ms(times: list[float]) -> dict[str, float]:
    a = 1000 * np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def bench(
    factory: str,
    x: np.ndarray,
    q: np.ndarray,
    truth: np.ndarray,
    rerank: int,
    nprobes: list[int],
) -> list[dict]:
    """One row per nprobe (one index built)."""
    recipe = load_recipe("effnet-ivfpq")
    cfg = recipe.index.model_copy(
        update={"float_factory": factory, "ivf_threshold": 1, "nprobe": nprobes[0]}
    )
    resolved = float_factory(cfg, len(x))
    t = time.perf_counter()
    index = FloatTileIndex.template(DIM, cfg, x)
    train = time.perf_counter() - t
    t = time.perf_counter()
    ids = np.arange(len(x), dtype=np.int64)
    for start in range(0, len(x), 200_000):
        index.add(x[start : start + 200_000], ids[start : start + 200_000])
    add = time.perf_counter() - t
    size = len(faiss.serialize_index(index.index))
    approximate = index.approximate
    rows = []
    for nprobe in nprobes if index.nlist else nprobes[:1]:
        index.set_nprobe(nprobe)
        rows.append(queries(index, x, q, truth, rerank if approximate else 0))
        rows[-1] = {
            "factory": resolved,
            "rerank": rerank if approximate else None,
            "nprobe": nprobe if index.nlist else None,
            **rows[-1],
            "index_bytes_per_tile": round(size / len(x), 1),
            "train_seconds": round(train, 1),
            "add_seconds": round(add, 1),
        }
        log(str(rows[-1]))
    return rows


def queries(
    index: FloatTileIndex, x: np.ndarray, q: np.ndarray, truth: np.ndarray, rerank: int
) -> dict:
    """Each query alone: top `rerank` from the index reordered by exact L2 on x (0: the
    index's own top 10)."""
    whole, alone, found = [], [], []
    approximate = rerank > 0
    for i in range(len(q)):
        t0 = time.perf_counter()
        D, I = index.search(q[i : i + 1], rerank if approximate else 10)
        t1 = time.perf_counter()
        cand = I[0][I[0] >= 0]
        if approximate:
            d = ((x[cand].astype(np.float64) - q[i].astype(np.float64)) ** 2).sum(axis=1)
            cand = cand[np.lexsort((cand, d))[:10]]
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        alone.append(t1 - t0)
        found.append(len(set(cand[:10].tolist()) & set(truth[i].tolist())) / 10)
    return {
        "recall_at_10": round(float(np.mean(found)), 4),
        "query": ms(whole),
        "index_search": ms(alone),
    }


def engine(x: np.ndarray, q: np.ndarray, truth: np.ndarray, workdir: Path) -> dict:
    """Build an effnet-ivfpq bundle of `x` (100 slides of 10,000 tiles) and time tile
    queries through Index.search_codes (see the module docstring)."""
    import cbir
    from cbir.eval.synthetic import synthetic_slide
    from cbir.pipeline import TilePipeline
    from cbir.storage.store import write_new_bundle
    from cbir.storage.writer import transaction
    from cbir.timing import StageTimer

    side = 100
    recipe = load_recipe("effnet-ivfpq")
    described = []
    for i, start in enumerate(range(0, len(x), side * side)):
        m = min(side * side, len(x) - start)
        rows = -(-m // side)
        keep = np.zeros((rows, side), bool)
        keep.ravel()[:m] = True
        described.append(synthetic_slide(f"slide-{i:04d}.svs", keep, x[start : start + m]))
    # the encoder standardises and normalises: its codes are what the bundle stores, so
    # the truth is taken again on them
    root = workdir / "bundle"
    t = time.perf_counter()
    timer = StageTimer()
    with transaction(root, create=True, overwrite=True) as writer:
        write_new_bundle(writer, recipe, TilePipeline(recipe), described, timer)
    build = time.perf_counter() - t
    log(f"bundle written in {build:.0f} s: {timer.as_dict()}")
    del described
    with cbir.open_index(root, device="cpu") as ix:  # the bundle's own vectors
        codes = ix.bundle.pipeline.encode(q)
    out = {"recipe": recipe.name, "build_seconds": round(build, 1)}
    out |= {"build_stage_seconds": timer.as_dict(), **engine_queries(root, codes)}
    log(str(out))
    return out


def engine_queries(root: Path, codes: np.ndarray) -> dict:
    """Tile queries (nq, d) of vectors as the bundle at `root` stores them, each alone
    through Index.search_codes: recall@10 against exact L2 over every stored vector,
    p50 / p99, bytes a tile on disk and of the index, mapped file pages brought in."""
    import cbir

    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    with cbir.open_index(root, device="cpu") as ix:  # the truth: exact L2 on the codes
        exact = faiss.IndexFlatL2(codes.shape[1])
        ids = [ix.bundle.meta.tile_ids_of(sid) for sid in sorted(ix.slides)]
        exact_ids = np.concatenate(ids)
        raw = np.frombuffer(b"".join(ix.bundle.meta.codes_of(exact_ids)), np.uint8)
        exact.add(ix.bundle.pipeline.codes_from_bytes(raw.reshape(len(exact_ids), -1)))
        del raw
        _, nn = exact.search(codes, 10)
        del exact
    want = [set(exact_ids[row].tolist()) for row in nn]
    gc.collect()
    rss0 = rss_mb()
    whole, found = [], []
    with cbir.open_index(root, device="cpu") as ix:
        parts = [p.index.index for p in ix.bundle.index.parts]
        index_bytes = sum(len(faiss.serialize_index(p)) for p in parts)
        kind = [faiss.try_extract_index_ivf(p) is not None for p in parts]
        for i in range(len(codes)):
            t0 = time.perf_counter()
            hits = ix.search_codes(codes[i : i + 1, None, None, :], 10)
            whole.append(time.perf_counter() - t0)
            found.append(len({h.tile_id for h in hits} & want[i]) / 10)
        rss1 = rss_mb()
    return {
        "tiles": len(exact_ids),
        "ivf": any(kind),
        "recall_at_10": round(float(np.mean(found)), 4),
        "query": ms(whole),
        "bundle_bytes_per_tile_on_disk": round(disk / len(exact_ids), 1),
        "index_bytes_per_tile": round(index_bytes / len(exact_ids), 1),
        # open + queries: mapped file pages (the index's file, LMDB pages py-lmdb
        # touched: clean, reclaimable)
        "rss_file_growth_mb": round(rss1[1] - rss0[1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--factories",
        default="Flat,IVF{nlist},PQ138x4fs,IVF{nlist},PQ46x4fs",
        help="comma-joined, or ';'-separated (needed for e.g. OPQ138,IVF{nlist},PQ138x4fs)",
    )
    parser.add_argument("--rerank", type=int, default=256)
    parser.add_argument("--nprobe", default="32", help="IVF lists probed, e.g. 32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", action="store_true", help="also through a bundle")
    parser.add_argument("--dtype", default="float32", help="float16 for 1e7 vectors")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--bundle", type=Path, default=None, help="real vectors: a float bundle's (not --n)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    if args.bundle is not None:  # real tiles; each query is a held-out tile
        x = bundle_vectors(args.bundle)
        held = np.zeros(len(x), bool)
        held[rng.choice(len(x), args.queries, replace=False)] = True
        q, x = x[held], np.ascontiguousarray(x[~held])
        args.n = len(x)
    else:
        x = vectors(args.n, args.seed, args.dtype)
        q = x[rng.choice(args.n, args.queries, replace=False)].astype(np.float32)
        q = q + 0.01 * rng.standard_normal(q.shape).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    log(f"{args.n} vectors in {time.perf_counter() - t:.0f} s")
    truth = np.zeros((len(q), 10), np.int64)
    if args.factories:
        t = time.perf_counter()
        truth = exact_top10(x, q)
        log(f"exact top 10 in {time.perf_counter() - t:.0f} s")
    if ";" in args.factories:  # explicit separators (factories with a pre-transform)
        factories = [f for f in args.factories.split(";") if f]
    else:
        split = args.factories.replace(",IVF", ";IVF").replace(",Flat", ";Flat")
        factories = [f for f in split.split(";") if f]
    nprobes = [int(p) for p in args.nprobe.split(",")]
    rows = [row for f in factories for row in bench(f, x, q, truth, args.rerank, nprobes)]
    out = {
        "n": args.n,
        "dim": DIM,
        "queries": args.queries,
        "data": f"real: {args.bundle}, queries held out" if args.bundle else "synthetic",
        "rows": rows,
    }
    if args.engine and args.bundle is not None:  # that bundle, queried with its tiles
        import cbir

        with cbir.open_index(args.bundle, device="cpu") as ix:
            ids = np.concatenate([ix.bundle.meta.tile_ids_of(s) for s in sorted(ix.slides)])
            pick = np.sort(rng.choice(ids, args.queries, replace=False))
            raw = np.frombuffer(b"".join(ix.bundle.meta.codes_of(pick)), np.uint8)
            codes = ix.bundle.pipeline.codes_from_bytes(raw.reshape(len(pick), -1))
        out["engine"] = engine_queries(args.bundle, codes)
        log(str(out["engine"]))
    elif args.engine:
        import tempfile

        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            out["engine"] = engine(x, q, truth, Path(tmp))
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
