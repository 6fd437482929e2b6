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
from collections.abc import Iterator
from pathlib import Path

import benchutil
import faiss
import numpy as np
from benchutil import log as _log

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cbir.index.float import FloatTileIndex, float_factory  # noqa: E402
from cbir.recipes import load_recipe  # noqa: E402
from cbir.storage.vector_rows import rows_of  # noqa: E402

DIM = 552


def log(msg: str) -> None:
    _log("bench_float_index", msg)


def iter_vectors(n: int, seed: int, chunk: int = 200_000) -> Iterator[np.ndarray]:
    """The (n, DIM) float32 unit vectors of the module docstring in consecutive chunks of
    `chunk` rows, standardised with the mean and spread of the first chunk."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 128)).astype(np.float32)
    w2 = rng.standard_normal((128, DIM)).astype(np.float32)
    mean = std = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.standard_normal((m, 16)).astype(np.float32)
        v = np.maximum(z @ w1, 0) @ w2 + 2.0 * rng.standard_normal((m, DIM)).astype(np.float32)
        if mean is None:
            mean, std = v.mean(axis=0), v.std(axis=0)
        v = (v - mean) / std
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def vectors(n: int, seed: int, dtype: str = "float32") -> np.ndarray:
    """(n, DIM) unit vectors (`iter_vectors`, the same everywhere); `dtype` float16
    halves the memory of 1e7 vectors (they are the stored vectors of the rerank)."""
    x = np.empty((n, DIM), dtype)
    start = 0
    for v in iter_vectors(n, seed):
        x[start : start + len(v)] = v
        start += len(v)
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


class Top10:
    """Each of (nq, d) queries' 10 nearest rows by squared L2 (float32), over row blocks
    given one at a time (`add`): `ids` (nq, 10), nearest first."""

    def __init__(self, q: np.ndarray) -> None:
        self.q = np.ascontiguousarray(q, np.float32)
        self.qn = (self.q * self.q).sum(axis=1)[:, None]
        self.d = np.full((len(q), 10), np.inf, np.float32)
        self.i = np.zeros((len(q), 10), np.int64)

    def add(self, xc: np.ndarray, ids: np.ndarray) -> None:
        """Rows (m, d) with ids (m,)."""
        xc = np.asarray(xc, np.float32)
        d = self.qn - 2.0 * (self.q @ xc.T) + (xc * xc).sum(axis=1)[None, :]
        d = np.concatenate([self.d, d], axis=1)
        i = np.concatenate([self.i, np.broadcast_to(ids, (len(self.q), len(ids)))], axis=1)
        top = np.argpartition(d, 10, axis=1)[:, :10]
        self.d, self.i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)

    @property
    def ids(self) -> np.ndarray:
        order = np.argsort(self.d, axis=1, kind="stable")
        return np.take_along_axis(self.i, order, 1)


def exact_top10(x: np.ndarray, q: np.ndarray, chunk: int = 500_000) -> np.ndarray:
    """(nq, 10) row numbers of each query's 10 nearest rows of x by squared L2 (brute
    force in chunks, float32)."""
    top = Top10(q)
    for start in range(0, len(x), chunk):
        xc = x[start : start + chunk]
        top.add(xc, start + np.arange(len(xc)))
    return top.ids


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now, MiB: (anonymous, file-backed). File-backed
    pages are mapped files (LMDB, Faiss files): clean, shared with the page cache and
    reclaimable."""
    found = benchutil.memory_mb()
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


def engine_streamed(
    n: int, seed: int, nq: int, batch: int, nlist: int | None, workdir: Path
) -> dict:
    """The `--engine` bundle of n vectors written as a user grows one: `build-index` of
    the first `batch` (the encoder and the IVF-PQ fitted on them, `nlist` lists), then
    one `add` (a segment) per further batch; only one batch is in memory. Queries: `nq`
    stored vectors moved slightly, as without --batch."""
    import itertools

    import cbir
    from cbir.eval.synthetic import synthetic_slide
    from cbir.indexer import add_described
    from cbir.pipeline import TilePipeline
    from cbir.storage.store import write_new_bundle
    from cbir.storage.writer import transaction
    from cbir.timing import StageTimer

    side = 100
    base = load_recipe("effnet-ivfpq")
    update = {"max_segments": max(base.index.max_segments, -(-n // batch) + 1)}
    if nlist:
        update["nlist"] = nlist
    recipe = base.model_copy(update={"index": base.index.model_copy(update=update)})
    rng = np.random.default_rng(seed + 1)
    pick = np.sort(rng.choice(n, nq, replace=False))
    root, timer, picked, start = workdir / "bundle", StageTimer(), [], 0
    chunks = iter_vectors(n, seed)
    t = time.perf_counter()
    while block := list(itertools.islice(chunks, max(1, batch // 200_000))):
        x = np.concatenate(block)
        del block
        mine = pick[(pick >= start) & (pick < start + len(x))] - start
        picked.append(x[mine])
        described = []
        for lo in range(0, len(x), side * side):
            m = min(side * side, len(x) - lo)
            keep = np.zeros((-(-m // side), side), bool)
            keep.ravel()[:m] = True
            name = f"slide-{(start + lo) // (side * side):05d}.svs"
            described.append(synthetic_slide(name, keep, x[lo : lo + m]))
        t1 = time.perf_counter()
        if start == 0:
            with transaction(root, create=True, overwrite=True) as writer:
                write_new_bundle(writer, recipe, TilePipeline(recipe), described, timer)
        else:
            with transaction(root, create=False) as writer:
                add_described(writer, described, timer)
                writer.commit(recipe)
        start += len(x)
        log(f"{start} vectors written ({time.perf_counter() - t1:.0f} s); RSS {rss_mb()}")
        del described, x
    build = time.perf_counter() - t
    log(f"bundle written in {build:.0f} s: {timer.as_dict()}")
    q = np.concatenate(picked)
    q = q + 0.01 * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    with cbir.open_index(root, device="cpu") as ix:
        codes = ix.bundle.pipeline.encode(q)
        segments = len(ix.bundle.segments)
    np.save(workdir / "queries.npy", codes)  # the queries as stored (--keep --reuse)
    out = {"recipe": recipe.name, "build_seconds": round(build, 1), "segments": segments}
    truth = engine_queries(root, codes, workdir / "truth.npz")
    out |= {"build_stage_seconds": timer.as_dict(), **truth}
    log(str(out))
    return out


def engine_queries(root: Path, codes: np.ndarray, truth_file: Path | None = None) -> dict:
    """Tile queries (nq, d) of vectors as the bundle at `root` stores them, each alone
    through Index.search_codes: recall@10 against exact L2 over every stored vector,
    p50 / p99, bytes a tile on disk and of the index, mapped file pages brought in."""
    import cbir

    disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    kept = truth_file  # --keep --reuse: computed once for these queries of this bundle
    with cbir.open_index(root, device="cpu") as ix:
        generation = ix.bundle.manifest.generation
    same = None
    if kept is not None and kept.is_file():
        same = np.load(kept)
        if "generation" not in same.files or int(same["generation"]) != generation:
            same = None
        elif not np.array_equal(same["codes"], codes):
            same = None
    if same is not None:
        nn, tiles = same["nn"], int(same["tiles"])
    else:
        top, tiles = Top10(codes), 0
        with cbir.open_index(root, device="cpu") as ix:  # the truth: exact L2 on the codes
            meta, decode = ix.bundle.meta, ix.bundle.pipeline.codes_from_bytes
            sids = sorted(ix.slides)
            for lo in range(0, len(sids), 20):  # 20 slides' vectors at a time
                ids = np.concatenate([meta.tile_ids_of(sid) for sid in sids[lo : lo + 20]])
                raw = np.frombuffer(b"".join(meta.codes_of(ids)), np.uint8)
                top.add(decode(raw.reshape(len(ids), -1)), ids)
                tiles += len(ids)
        nn = top.ids
        if kept is not None:
            np.savez(kept, codes=codes, nn=nn, tiles=tiles, generation=generation)
    want = [set(row.tolist()) for row in nn]
    gc.collect()
    benchutil.evict_from_cache(root)  # the first pass reads what it needs from the disk
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
        again, alone, rows = [], [], []  # pages the first pass read are in the OS cache
        for i in range(len(codes)):
            t0 = time.perf_counter()
            ix.search_codes(codes[i : i + 1, None, None, :], 10)
            t1 = time.perf_counter()
            _, top256 = ix.bundle.index.search(codes[i : i + 1], 256)
            t2 = time.perf_counter()
            rows_of(ix.bundle.rows, top256[0], codes.shape[1])
            again.append(t1 - t0)
            alone.append(t2 - t1)
            rows.append(time.perf_counter() - t2)
    # a server's steady state: the index resident (its bytes a tile are the memory
    # budget), the grids and rows files on the disk (evicted while nothing maps them)
    gc.collect()
    benchutil.evict_from_cache(root)
    for f in root.rglob("tiles.fbin"):
        f.read_bytes()
    resident = []
    with cbir.open_index(root, device="cpu") as ix:
        for i in range(len(codes)):
            t0 = time.perf_counter()
            ix.search_codes(codes[i : i + 1, None, None, :], 10)
            resident.append(time.perf_counter() - t0)
    return {
        "tiles": tiles,
        "ivf": any(kind),
        "recall_at_10": round(float(np.mean(found)), 4),
        "query": ms(whole),
        "query_second_pass": ms(again),
        "query_index_resident_rows_from_disk": ms(resident),
        "index_search_top256": ms(alone),
        "rows_read_256": ms(rows),
        "bundle_bytes_per_tile_on_disk": round(disk / tiles, 1),
        "index_bytes_per_tile": round(index_bytes / tiles, 1),
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
        "--batch",
        type=int,
        default=None,
        help="--engine only, no --factories: write the bundle streamed, one segment per "
        "batch of this many vectors (a multiple of 200,000), for 1e7",
    )
    parser.add_argument("--nlist", type=int, default=None, help="--batch: the IVF lists")
    parser.add_argument(
        "--keep", action="store_true", help="--batch: keep the bundle in --workdir/bundle"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="--batch --keep: query the kept bundle again"
    )
    parser.add_argument(
        "--bundle", type=Path, default=None, help="real vectors: a float bundle's (not --n)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.batch:
        if args.factories or not args.engine or args.bundle is not None:
            parser.error("--batch is for --engine --factories '' without --bundle")
        if (args.keep or args.reuse) and args.workdir is None:
            parser.error("--keep and --reuse need --workdir")
        import tempfile

        out = {"n": args.n, "dim": DIM, "queries": args.queries, "data": "synthetic"}
        if args.keep:  # the bundle and its queries stay in --workdir (--reuse queries them)
            kept = args.workdir / "bundle"
            if args.reuse:
                log(f"reusing {kept}")
                codes = np.load(args.workdir / "queries.npy")
                truth = engine_queries(kept, codes, args.workdir / "truth.npz")
                out["engine"] = {"reused": str(kept), **truth}
            else:
                out["engine"] = engine_streamed(
                    args.n, args.seed, args.queries, args.batch, args.nlist, args.workdir
                )
        else:
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                out["engine"] = engine_streamed(
                    args.n, args.seed, args.queries, args.batch, args.nlist, Path(tmp)
                )
        if args.json:
            print(json.dumps(out, indent=1))
        return
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
