#!/usr/bin/env python
"""DELF measurements: extraction time, descriptors and index bytes per image,
verification time, and precision@1 with and without verification.

    python tools/bench_delf.py --json [--weights delf.pt] [--device cpu] [--skip-timing]

Every measurement of parts 2 and 3 is made twice, "before" (the local storage of
earlier bundles: an HNSW32,Flat index of float rows) and "after" (the recipe default:
an IVF of PQ20 codes), with the same weights and queries; `summary` puts them side by
side. local_bytes_per_tile: the local index files and LMDB local-feature records of
every segment, divided by the tiles.

Without --weights a small-dense DELF is trained on half of tiles-crc9 (seed 0; the same
split `cbir train delf` makes) and the other half are the crc9 queries.
1. Extraction (seeded weights; speed does not depend on them): per 224 px tile (batches
   of 8) and per 1024 px image, for each --timing-trunks, with the 7-scale pyramid.
2. tiles-crc9: every image is indexed (one 224 tile each); each held-out image queries
   the rest. P@1 = the best hit other than itself has the query's class: by the global
   (attention-pooled) descriptor, by local votes + RANSAC, and by the global top 100
   reranked by RANSAC inliers (whose time per query and per pair is reported).
3. Transformed slide crops: both SVS slides indexed at 10x and 20x; 400 px queries cut
   around random tissue points, rotated by U(-30, 30) degrees and scaled by U(0.5, 2).
   Correct = top hit on the right slide and, verified, the fitted transform maps the
   query centre within 50 level-0 px of the truth; unverified, the top hit's rectangle
   contains the true centre.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from benchutil import log

from cbir.api import open_index
from cbir.delf.extract import DelfExtractor
from cbir.indexer import build_index
from cbir.nn.train.delf import DelfTrainConfig, train_delf
from cbir.nn.weights import load_weights
from cbir.recipes import Recipe
from cbir.search.query import query_tiles
from cbir.search.verified import verify_hits
from cbir.slides import open_slide
from cbir.slides.open import decode_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
#: The local storage of bundles before compact local features (an HNSW graph of float
#: rows); now also without the float16 descriptors and float32 keypoints they kept in LMDB.
BEFORE = {"float_factory": "HNSW32,Flat"}


def crc9_paths() -> list[Path]:
    return sorted(p for p in (DATA / "tiles-crc9").rglob("*") if p.suffix in IMAGE_SUFFIXES)


def recipe(trunk: str, tile: int, mags: list[float], local: dict | None = None) -> Recipe:
    """The benchmark's DELF recipe; `local`: LocalConfig fields to override (storage)."""
    return Recipe.model_validate(
        {
            "name": "delf-bench",
            "tiling": {"tile_size": tile, "magnifications": mags, "min_tissue_fraction": 0.0},
            "descriptor": {"name": "delf", "params": {"trunk": trunk}},
            "encoder": {"name": "float"},
            "index": {"float_factory": "Flat"},
            "search": {"verify": False},
            "local": {"params": {"trunk": trunk}, "candidates_from": "votes", **(local or {})},
        }
    )


def timing(trunks: list[str], device: str) -> dict[str, object]:
    tiles = np.stack([decode_image(p) for p in crc9_paths()[:8]])
    with open_slide(DATA / "wsi" / "cmu-1-small-region.svs") as s:
        image = s.read_region(600, 800, 1024, 1024, 20.0)
    out: dict[str, object] = {}
    for trunk in trunks:
        ex = DelfExtractor(trunk=trunk, device=device)
        ex.extract_batch(tiles[:2])  # warm up
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            feats = ex.extract_batch(tiles)
            runs.append((time.perf_counter() - t) / len(tiles))
        t = time.perf_counter()
        big = ex.extract(image)
        out[trunk] = {
            "ms_per_224_tile": round(1e3 * min(runs), 1),
            "features_per_224_tile": round(float(np.mean([len(f) for f in feats])), 1),
            "s_per_1024_image": round(time.perf_counter() - t, 2),
            "features_per_1024_image": len(big),
        }
        log("delf", f"{trunk}: {out[trunk]}")
    return out


def local_bytes(root: Path) -> int:
    """Bytes of a bundle's local features: every segment's local index file plus its
    LMDB's local-feature records (keys and values), read from the files themselves."""
    import lmdb

    total = 0
    for seg in sorted(root.glob("seg-*")):
        if (seg / "locals.faiss").is_file():
            total += (seg / "locals.faiss").stat().st_size
        env = lmdb.open(str(seg / "meta.lmdb"), readonly=True, lock=False, max_dbs=16)
        try:
            db = env.open_db(b"locals", create=False)
            with env.begin() as txn:
                total += sum(len(k) + len(v) for k, v in txn.cursor(db=db))
        finally:
            env.close()
    return total


def crc9(
    weights: Path, trunk: str, holdout: list[str], tmp: Path, local: dict | None
) -> dict[str, object]:
    paths = crc9_paths()
    label = {str(p.resolve()): p.parent.name for p in paths}
    root = tmp / "crc9"
    t = time.perf_counter()
    build_index(
        paths,
        root,
        recipe(trunk, 224, [20.0], local),
        weights=weights,
        base_magnification=20,
        untrained=weights is None,
    )
    build_s = time.perf_counter() - t
    found = {"global": 0, "votes_ransac": 0, "global_top100_ransac": 0}
    verify_ms, votes_ms = [], []
    with open_index(root) as ix:
        n_images = len(ix.slides)
        for q in holdout:
            qpath = str(Path(q).resolve())
            img = decode_image(Path(q))

            def first_other(hits: list, qpath: str = qpath) -> str | None:
                other = [h for h in hits if h.slide_path != qpath]
                return label[other[0].slide_path] if other else None

            found["global"] += first_other(ix.search(img, k=2, verify=False).hits) == label[qpath]
            r = ix.search(img, k=2, verify=True)
            votes_ms.append(1e3 * r.seconds)
            found["votes_ransac"] += first_other(r.hits) == label[qpath]
            x, codes = ix.tile_codes(query_tiles(img, 224, q))
            coarse = ix.search_codes(codes, 101, x)
            feats = ix.bundle.local.query(img)
            t = time.perf_counter()
            hits = verify_hits(ix.collection, feats, coarse, 101)
            verify_ms.append(1e3 * (time.perf_counter() - t))
            found["global_top100_ransac"] += first_other(hits) == label[qpath]
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "images": n_images,
        "queries": len(holdout),
        "precision_at_1": {k: round(v / len(holdout), 3) for k, v in found.items()},
        "build_s": round(build_s, 1),
        "local_index_bytes_per_image": round(local_bytes(root) / n_images),
        "bundle_bytes_per_image": round(size / n_images),
        "votes_query_ms_p50": round(statistics.median(votes_ms), 1),
        "verify_top100_ms_p50": round(statistics.median(verify_ms), 2),
        "verify_ms_per_pair": round(statistics.median(verify_ms) / 101, 3),
    }


def slide_crops(
    weights: Path, trunk: str, n: int, tmp: Path, local: dict | None
) -> dict[str, object]:
    slides = [DATA / "wsi" / "cmu-1-small-region.svs", DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"]
    root = tmp / "wsi"
    t = time.perf_counter()
    build_index(
        slides,
        root,
        recipe(trunk, 224, [10.0, 20.0], local),
        weights=weights,
        untrained=weights is None,
    )
    build_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    ok = {"unverified": 0, "verified": 0}
    errors = []
    with open_index(root) as ix:
        n_tiles = ix.bundle.index.ntotal
        n_features = ix.bundle.local_index.ntotal
        recs = [
            (r, g)
            for r in ix.slides.values()
            for g in ix.bundle.meta.grids_of(r.slide_id)
            if g.geometry.magnification == 20.0
        ]
        for _ in range(n):
            rec, grid = recs[rng.integers(len(recs))]
            rr, cc = np.nonzero(grid.valid)
            i = rng.integers(len(rr))
            x, y, w, _ = grid.geometry.rect(int(rr[i]), int(cc[i]))
            cx, cy = x + w / 2 + rng.uniform(-w / 4, w / 4), y + w / 2 + rng.uniform(-w / 4, w / 4)
            angle, scale = rng.uniform(-30, 30), float(np.exp(rng.uniform(np.log(0.5), np.log(2))))
            per_px = rec.info.base_magnification / 20.0  # level-0 px per 20x px
            half = int(np.ceil(400 / scale * 0.75))  # covers the rotated 400 px window
            with open_slide(rec.info.path) as s:
                x0 = int(np.clip(cx - half * per_px, 0, s.info.width - 2 * half * per_px))
                y0 = int(np.clip(cy - half * per_px, 0, s.info.height - 2 * half * per_px))
                side = int(2 * half * per_px)
                patch = s.read_region(x0, y0, side, side, 20.0)
            pc = np.array([(cx - x0) / per_px, (cy - y0) / per_px])
            a = cv2.getRotationMatrix2D((0, 0), angle, scale)[:, :2]
            m = np.hstack([a, (np.array([200, 200]) - a @ pc)[:, None]])
            query = cv2.warpAffine(patch, m, (400, 400), borderMode=cv2.BORDER_REFLECT)
            plain = ix.search(query, k=1, verify=False).hits
            if plain:
                h = plain[0]
                ok["unverified"] += (
                    h.slide_id == rec.slide_id and h.x <= cx < h.x + h.w and h.y <= cy < h.y + h.h
                )
            hits = ix.search(query, k=1, verify=True).hits
            if hits and hits[0].slide_id == rec.slide_id:
                c = np.array(hits[0].affine) @ np.array([200, 200, 1.0])
                err = float(np.hypot(c[0] - cx, c[1] - cy))
                errors.append(err)
                ok["verified"] += err < 50
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "queries": n,
        "tiles": n_tiles,
        "features_per_tile": round(n_features / n_tiles, 1),
        "build_s": round(build_s, 1),
        "local_bytes_per_tile": round(local_bytes(root) / n_tiles),
        "bundle_bytes_per_tile": round(size / n_tiles),
        "precision_at_1": {k: round(v / n, 3) for k, v in ok.items()},
        "median_centre_error_px": round(statistics.median(errors), 1) if errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timing-trunks", default="resnet50,small-dense")
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--save-weights", type=Path, help="keep the trained weights here")
    parser.add_argument(
        "--after", default="{}", help="LocalConfig overrides of the storage measured (JSON)"
    )
    parser.add_argument(
        "--before",
        default=json.dumps(BEFORE),
        help="the storage compared against (JSON LocalConfig overrides; 'none': skip)",
    )
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (DATA / "tiles-crc9").is_dir():
        print(f"bench_delf: {DATA} not found", file=sys.stderr)
        raise SystemExit(2)
    storages = {"after": json.loads(args.after)}
    if args.before != "none":
        storages = {"before": json.loads(args.before), **storages}
    report: dict[str, object] = {}
    if not args.skip_timing:
        report["extraction"] = timing(args.timing_trunks.split(","), args.device)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = Path(tmp) / "delf.pt"
            cfg = DelfTrainConfig(
                trunk="small-dense", trunk_epochs=15, attention_epochs=10, lr=3e-3
            )
            tr = train_delf(DATA / "tiles-crc9", weights, cfg, device=args.device)
            report["training"] = tr.model_dump(exclude={"weights", "sha256", "classes"})
            log("delf", f"trained: {report['training']}")
            if args.save_weights:
                args.save_weights.write_bytes(weights.read_bytes())
        spec, _ = load_weights(weights, "delf")
        trunk = str(spec["trunk"])
        report["trunk"] = trunk
        for name, local in storages.items():
            work = Path(tmp) / name
            work.mkdir()
            out = {"local": local}
            out["crc9"] = crc9(weights, trunk, list(spec["holdout_paths"]), work, local)
            log("delf", f"{name} crc9: {out['crc9']}")
            out["slide_crops"] = slide_crops(weights, trunk, args.crops, work, local)
            log("delf", f"{name} slide crops: {out['slide_crops']}")
            report[name] = out
    report["summary"] = summary(report, list(storages))
    print(json.dumps(report, indent=None if args.json else 2))


def summary(report: dict, names: list[str]) -> dict[str, dict[str, object]]:
    """The headline numbers of each storage side by side."""
    keys = {
        "local_bytes_per_tile": ("slide_crops", "local_bytes_per_tile"),
        "slide_crops_p1_verified": ("slide_crops", "precision_at_1", "verified"),
        "slide_crops_p1_unverified": ("slide_crops", "precision_at_1", "unverified"),
        "crc9_p1_votes_ransac": ("crc9", "precision_at_1", "votes_ransac"),
        "crc9_p1_global_top100_ransac": ("crc9", "precision_at_1", "global_top100_ransac"),
        "votes_query_ms_p50": ("crc9", "votes_query_ms_p50"),
    }
    out: dict[str, dict[str, object]] = {}
    for key, path in keys.items():
        out[key] = {}
        for name in names:
            value = report[name]
            for part in path:
                value = value[part]
            out[key][name] = value
    return out


if __name__ == "__main__":
    main()
