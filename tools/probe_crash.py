#!/usr/bin/env python
"""Crash probe for cbir bundles: SIGKILL writers at random points, check what is left.

What it probes (issue 12, section 4: ">= 50 kills, 0 unreadable or inconsistent bundles")
    Bundles are format 3 (cbir/storage/manifest.py): `manifest.json` names one collection-state
    directory `state-NNNNNN/` and immutable segment directories `seg-NNNNNN[-K]/`, oldest
    first; removed slides are tombstones (`segments[i].dead_slides`) in the manifest. A
    writer stages new directories as `.tmp-<pid>-seg-...` / `.tmp-<pid>-state-...`,
    renames them into place and publishes by replacing the manifest (its `generation`
    counts publishes); directories the live manifest does not reference are swept by the
    next writer (cbir/storage/writer.py `sweep`).

    In a temp dir, three small 3-level pyramidal TIFFs are written with
    `cbir.slides.sample.write_pyramidal_tiff`: A = the sample image at 0.25 um/px, B = it rotated
    by 90 degrees at 0.5 um/px (tests/conftest.py's second_slide), C = it flipped left-right
    at 0.25 um/px. A stats-lsh32 bundle of A and B is built (not killed).

    Each operation is the real CLI in a fresh process,
    `[sys.executable, "-c", "from cbir.cli.main import app; app()", ...]`:
    * build: `build-index --overwrite --out BUNDLE` of a random non-empty subset of A, B, C
      (a new state and one segment);
    * add: `add BUNDLE S` of a slide S not in the bundle (only when one is missing): one
      new segment, and segments merged when auto-compaction picks them;
    * remove: `remove BUNDLE S` of a slide in the bundle (only when it holds two or more):
      a tombstone in the manifest, or the segment merged or dropped when it is mostly dead;
    * compact: `compact BUNDLE` (only when the bundle has two or more segments or any
      tombstone): every segment merged into one, tombstoned tiles dropped.
    Each operation's wall time (process start to exit) is measured once without a kill
    (build A,B; add C; compact; remove C). Then, until `--kills` kills are done, an
    operation is picked at random among those meaningful in the bundle's state, started
    with subprocess.Popen, and after a delay drawn uniformly from [0, its measured
    duration] it is sent SIGKILL. One that exited before the signal is "completed, not
    killed" and does not count towards --kills. With probability `--recover-prob` the
    operation that follows a kill is not killed but run to completion, so that writing
    over a killed run's leftovers is checked for real.

    After every operation (killed or not), in this process:
    1. the bundle opens (`cbir.open_index`);
    2. Faiss live ntotal over all segments (`bundle.index.ntotal`) == LMDB live tile count
       (`bundle.meta.tile_count()`) == manifest counts.tiles == the sum of the live slide
       records' tiles, and the number of slide records == manifest counts.slides; per
       segment, its Faiss rows == its LMDB tiles == the manifest entry's `tiles`, its
       `dead_tiles` == the tiles of its `dead_slides`, and every dead slide is in it;
    3. a tile query (a 224 px crop of the sample image, k=5, allow_background=True)
       returns hits without error;
    4. the state (manifest generation, set of slide file names, tile count and tiles per
       slide) is either the state before the operation (generation unchanged) or the
       expected state after it (generation + 1; slide tile counts are those of the
       calibration runs). A compact's before and after have the same slides and tiles and
       differ in generation; its "after" must also hold one segment and no tombstone. In
       "after" of add, remove and compact the slides kept keep their slide ids;
    5. writes are not blocked: an operation that exits by itself with a non-zero code is a
       blocked write (its stderr is kept), and after a kill the bundle's `.lock` must be
       lockable (flock LOCK_EX | LOCK_NB), as the next writer needs it.
    Entries of the bundle directory other than manifest.json and the directories the live
    manifest references (its `state` and `segments[*].name`) are counted after each
    operation, by kind: `.lock` (never deleted, so always there and harmless), stages
    (`.tmp-*`), stale segments (`seg-*`), stale state (`state-*`), old generations
    (`gen-*`), `.manifest.json.tmp`, other. The bundle's real state after each check is
    what the next operation is chosen from; an unreadable bundle is recorded and rebuilt
    from scratch so the probe can go on.

Run (from the repository root, with the venv active)
    python tools/probe_crash.py --kills 60 --json      # a few minutes on 2 cores
One JSON object goes to stdout with --json (a short summary otherwise); logs go to stderr.
Exit code 1 when any bundle was unreadable or inconsistent, or a write was blocked.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchutil

CLI = [sys.executable, "-c", "from cbir.cli.main import app; app()"]
RECIPE = "stats-lsh32"
BASE = ("A.tif", "B.tif")
OPS = ("build", "add", "remove", "compact")
LEFTOVER_KINDS = (
    "lock",
    "stage",
    "stale_segment",
    "stale_state",
    "stale_generation",
    "manifest_tmp",
    "other",
)


def log(msg: str) -> None:
    """Write a timestamped progress line to stderr."""
    benchutil.log("probe_crash", msg)


def make_slides(workdir: Path) -> dict[str, Path]:
    """Write the three test slides; returns {file name: path}."""
    import numpy as np

    from cbir.slides.sample import sample_image, write_pyramidal_tiff

    img = sample_image()
    specs = {
        "A.tif": (img, 0.25),
        "B.tif": (np.ascontiguousarray(np.rot90(img)), 0.5),
        "C.tif": (np.ascontiguousarray(img[:, ::-1]), 0.25),
    }
    out = {}
    for name, (image, mpp) in specs.items():
        out[name] = write_pyramidal_tiff(workdir / name, image, mpp=mpp).resolve()
    return out


def command(op: str, root: Path, slides: dict[str, Path], target: list[str]) -> list[str]:
    """The CLI command line of one operation."""
    if op == "build":
        paths = [str(slides[n]) for n in target]
        return [*CLI, "build-index", *paths, "--out", str(root), "-r", RECIPE, "--overwrite"]
    if op == "add":
        return [*CLI, "add", str(root), str(slides[target[0]])]
    if op == "remove":
        return [*CLI, "remove", str(root), str(slides[target[0]])]
    if op == "compact":
        return [*CLI, "compact", str(root)]
    raise ValueError(op)


def _check_segments(b) -> None:
    """Per segment: Faiss rows == LMDB tiles == the manifest entry's tiles; its dead
    slides are in it and dead_tiles is their tile count. Raises AssertionError."""
    for seg in b.segments:
        e = seg.entry
        records = {r.slide_id: r.tiles for r in seg.store.slide_list()}
        rows, lmdb_n = seg.index.ntotal, sum(records.values())
        if not (rows == lmdb_n == e.tiles) or len(records) != e.slides:
            raise AssertionError(
                f"segment {e.name}: Faiss {rows} rows, LMDB {lmdb_n} tiles in "
                f"{len(records)} slides, manifest {e.tiles} tiles in {e.slides} slides"
            )
        missing = set(e.dead_slides) - set(records)
        if missing:
            raise AssertionError(f"segment {e.name}: tombstones {sorted(missing)} not in it")
        dead = sum(records[s] for s in e.dead_slides)
        if dead != e.dead_tiles:
            raise AssertionError(
                f"segment {e.name}: dead_tiles {e.dead_tiles}, its dead slides hold {dead}"
            )


def read_state(root: Path, query) -> dict[str, object]:
    """Checks 1-3 on the bundle; returns generation, slide names, tiles, per-slide tiles,
    slide ids, segments, tombstones and the directories the manifest references.
    Raises on an unreadable or inconsistent bundle."""
    import cbir

    index = cbir.open_index(root, device="cpu")
    try:
        b = index.bundle
        m = b.manifest
        records = b.meta.slide_list()
        faiss_n, lmdb_n = b.index.ntotal, b.meta.tile_count()
        per_slide = {Path(r.info.path).name: r.tiles for r in records}
        if not (faiss_n == lmdb_n == m.counts.tiles == sum(per_slide.values())):
            raise AssertionError(
                f"tile counts differ: Faiss {faiss_n}, LMDB {lmdb_n}, manifest "
                f"{m.counts.tiles}, slide records {sum(per_slide.values())}"
            )
        if len(records) != m.counts.slides or len(per_slide) != len(records):
            raise AssertionError(
                f"slide counts differ: {len(records)} records, manifest {m.counts.slides}"
            )
        _check_segments(b)
        result = index.search(query, k=5, allow_background=True)
        if not result.hits:
            raise AssertionError("tile query returned no hits")
        return {
            "generation": m.generation,
            "slides": sorted(per_slide),
            "tiles": m.counts.tiles,
            "per_slide": per_slide,
            "slide_ids": {Path(r.info.path).name: r.slide_id for r in records},
            "segments": [s.name for s in m.segments],
            "tombstones": sum(len(s.dead_slides) for s in m.segments),
            "referenced": sorted({m.state, *(s.name for s in m.segments)} - {""}),
        }
    finally:
        index.close()


def leftovers(root: Path, referenced: list[str]) -> list[str]:
    """Entries of the bundle directory other than manifest.json and the directories the
    live manifest references."""
    keep = {"manifest.json", *referenced}
    return sorted(p.name for p in root.iterdir() if p.name not in keep)


def referenced_raw(root: Path) -> list[str]:
    """The directories manifest.json names (`state`, `segments[*].name`), read as plain
    JSON: for a bundle that does not open; [] when it is unreadable."""
    try:
        m = json.loads((root / "manifest.json").read_text())
        return [m["state"], *(s["name"] for s in m["segments"])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def leftover_kind(name: str) -> str:
    """A leftover's kind: lock, stage, stale_segment, stale_state, stale_generation,
    manifest_tmp or other."""
    if name == ".lock":
        return "lock"
    if name == ".manifest.json.tmp":
        return "manifest_tmp"
    if name.startswith(".tmp-"):
        return "stage"
    if name.startswith("seg-"):
        return "stale_segment"
    if name.startswith("state-"):
        return "stale_state"
    if name.startswith("gen-"):
        return "stale_generation"
    return "other"


def lock_free(root: Path) -> bool:
    """Whether the bundle's .lock can be taken now (it must be, with no writer running)."""
    lock = root / ".lock"
    if not lock.exists():
        return True
    with open(lock) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def start(cmd: list[str], errfile: Path) -> subprocess.Popen:
    """Start an operation; its stdout is discarded, its stderr goes to errfile."""
    with open(errfile, "wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


def run_once(cmd: list[str], errfile: Path) -> tuple[int, float]:
    """Run an operation to completion: (exit code, wall seconds)."""
    t0 = time.perf_counter()
    proc = start(cmd, errfile)
    rc = proc.wait()
    return rc, time.perf_counter() - t0


def expected_after(op: str, state: dict, target: list[str], tiles_of: dict[str, int]) -> dict:
    """The state an operation publishes if it completes (compact: the same slides and
    tiles, one generation later)."""
    if op == "build":
        names = set(target)
    elif op == "add":
        names = set(state["slides"]) | set(target)
    elif op == "remove":
        names = set(state["slides"]) - set(target)
    elif op == "compact":
        names = set(state["slides"])
    else:
        raise ValueError(op)
    return {
        "generation": state["generation"] + 1,
        "slides": sorted(names),
        "tiles": sum(tiles_of[n] for n in names),
        "per_slide": {n: tiles_of[n] for n in sorted(names)},
    }


def same(a: dict, b: dict) -> bool:
    """Equal generation, slide names, tile count and tiles per slide."""
    return all(a[k] == b[k] for k in ("generation", "slides", "tiles", "per_slide"))


def check_after(op: str, pre: dict, now: dict) -> None:
    """What an operation's published state must also hold beyond `same`: slides kept by
    add / remove / compact keep their ids; a compact leaves one segment, no tombstone."""
    if op != "build":
        moved = {
            n: (pre["slide_ids"][n], now["slide_ids"][n])
            for n in set(pre["slide_ids"]) & set(now["slide_ids"])
            if pre["slide_ids"][n] != now["slide_ids"][n]
        }
        if moved:
            raise AssertionError(f"{op} changed slide ids (before, after): {moved}")
    if op == "compact" and (len(now["segments"]) != 1 or now["tombstones"]):
        raise AssertionError(
            f"compact left segments {now['segments']} and {now['tombstones']} tombstones"
        )


def choose(rng: random.Random, state: dict, names: list[str]) -> tuple[str, list[str]]:
    """A random operation that is meaningful in this state, and its slides."""
    present = set(state["slides"])
    missing = [n for n in names if n not in present]
    ops = ["build"]
    if missing:
        ops.append("add")
    if len(present) >= 2:
        ops.append("remove")
    if len(state["segments"]) >= 2 or state["tombstones"]:
        ops.append("compact")
    op = rng.choice(ops)
    if op == "build":
        k = rng.randint(1, len(names))
        return op, sorted(rng.sample(names, k))
    if op == "add":
        return op, [rng.choice(missing)]
    if op == "remove":
        return op, [rng.choice(sorted(present))]
    return op, []


def run(args: argparse.Namespace) -> dict[str, object]:
    """Write slides, build the base bundle, calibrate, then kill and check; the result."""
    import numpy as np

    from cbir.slides.sample import sample_image

    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cbir-probe-crash-"))
    try:
        slides = make_slides(tmp)
        names = sorted(slides)
        root = tmp / "idx"
        errfile = tmp / "stderr.txt"
        query = np.ascontiguousarray(sample_image()[512:736, 512:736])

        def checked_run(op: str, target: list[str]) -> float:
            rc, secs = run_once(command(op, root, slides, target), errfile)
            if rc != 0:
                raise RuntimeError(f"{op} {target} failed ({rc}): {errfile.read_text()[-2000:]}")
            return secs

        # Calibration: each operation once, not killed; per-slide tile counts.
        durations: dict[str, float] = {}
        durations["build"] = checked_run("build", list(BASE))
        state = read_state(root, query)
        durations["add"] = checked_run("add", ["C.tif"])
        state = read_state(root, query)
        tiles_of = dict(state["per_slide"])
        if len(state["segments"]) < 2:
            raise RuntimeError(f"add wrote no second segment: {state['segments']}")
        durations["compact"] = checked_run("compact", [])
        compacted = read_state(root, query)
        check_after("compact", state, compacted)
        if not same(compacted, expected_after("compact", state, [], tiles_of)):
            raise RuntimeError(f"calibration compact: {_short(state)} -> {_short(compacted)}")
        durations["remove"] = checked_run("remove", ["C.tif"])
        state = read_state(root, query)
        log(
            f"slides {tiles_of} tiles; durations (s) {durations}; after calibration "
            f"segments {state['segments']}, {state['tombstones']} tombstones"
        )

        kills: collections.Counter[str] = collections.Counter()
        completed: collections.Counter[str] = collections.Counter()
        outcomes: collections.Counter[str] = collections.Counter()
        outcomes_per_op: dict[str, collections.Counter[str]] = {
            op: collections.Counter() for op in OPS
        }
        left_after_kill: collections.Counter[str] = collections.Counter()
        left_after_completed: collections.Counter[str] = collections.Counter()
        kills_with_leftovers = 0
        failures: list[dict[str, object]] = []
        blocked: list[dict[str, object]] = []
        writes_after_kill_completed = 0
        after_kill = False
        ops_run = 0
        while sum(kills.values()) < args.kills and ops_run < args.max_ops:
            ops_run += 1
            op, target = choose(rng, state, names)
            post = expected_after(op, state, target, tiles_of)
            recover = after_kill and rng.random() < args.recover_prob
            delay = None if recover else rng.uniform(0.0, durations[op])
            proc = start(command(op, root, slides, target), errfile)
            killed = False
            if delay is None:
                rc = proc.wait()
            else:
                try:
                    rc = proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    rc = proc.wait()
                    killed = rc == -signal.SIGKILL
            what = f"{op} {','.join(target)}".strip()
            if killed:
                kills[op] += 1
            else:
                completed[op] += 1
                if rc != 0:
                    err = errfile.read_text(errors="replace").strip()[-2000:]
                    blocked.append({"op": what, "after_kill": after_kill, "rc": rc, "stderr": err})
                    log(f"BLOCKED {what}: rc {rc}: {err}")
                elif after_kill:
                    writes_after_kill_completed += 1
            pre = state
            try:
                now_state = read_state(root, query)
                if same(now_state, pre):
                    outcome = "before"
                elif same(now_state, post):
                    outcome = "after"
                    check_after(op, pre, now_state)
                else:
                    raise AssertionError(
                        f"state is neither before {_short(pre)} nor after {_short(post)}: "
                        f"{_short(now_state)}"
                    )
                if not killed and rc == 0 and outcome != "after":
                    raise AssertionError(f"completed (rc 0) but the bundle is {_short(pre)}")
                state = now_state
            except Exception as exc:  # noqa: BLE001 (any failure to read is a finding)
                outcome = "FAILED"
                failures.append(
                    {
                        "op": what,
                        "killed": killed,
                        "delay_s": None if delay is None else round(delay, 3),
                        "error": f"{type(exc).__name__}: {exc}",
                        "files": sorted(p.name for p in root.iterdir()) if root.exists() else [],
                        "manifest": _manifest_summary(root),
                    }
                )
                log(f"FAILED after {what} (delay {delay}): {type(exc).__name__}: {exc}")
                # The broken bundle's leftovers, against what its manifest names.
                left = leftovers(root, referenced_raw(root)) if root.exists() else []
                shutil.rmtree(root, ignore_errors=True)
                checked_run("build", list(BASE))
                state = read_state(root, query)
            else:
                left = leftovers(root, state["referenced"])
            outcomes[outcome] += 1
            outcomes_per_op[op][outcome] += 1
            counter = left_after_kill if killed else left_after_completed
            for name in left:
                counter[leftover_kind(name)] += 1
            if killed:
                if any(leftover_kind(n) != "lock" for n in left):
                    kills_with_leftovers += 1
                if not lock_free(root):
                    blocked.append(
                        {
                            "op": what,
                            "after_kill": True,
                            "rc": None,
                            "stderr": ".lock still held after the kill",
                        }
                    )
            after_kill = killed
            log(
                f"{'KILL' if killed else 'done'} {what} "
                f"{'' if delay is None else f'after {delay:.2f} s '}-> {outcome}; "
                f"segments {state['segments']} tombstones {state['tombstones']}; "
                f"leftovers {left}; kills {sum(kills.values())}/{args.kills}"
            )

        # Check (5) once more at the end: a last write over whatever the last kill left.
        final_write = None
        if after_kill:
            op, target = choose(rng, state, names)
            rc, _ = run_once(command(op, root, slides, target), errfile)
            final_write = {"op": f"{op} {','.join(target)}".strip(), "rc": rc}
            if rc != 0:
                blocked.append(
                    {
                        "op": final_write["op"],
                        "after_kill": True,
                        "rc": rc,
                        "stderr": errfile.read_text(errors="replace")[-2000:],
                    }
                )
            else:
                writes_after_kill_completed += 1
                try:
                    final = read_state(root, query)
                    if not same(final, expected_after(op, state, target, tiles_of)):
                        raise AssertionError(f"final write left {_short(final)}")
                    check_after(op, state, final)
                    final_write["leftovers"] = leftovers(root, final["referenced"])
                except Exception as exc:  # noqa: BLE001
                    failures.append(
                        {
                            "op": final_write["op"],
                            "killed": False,
                            "delay_s": None,
                            "error": f"{type(exc).__name__}: {exc}",
                            "files": sorted(p.name for p in root.iterdir()),
                            "manifest": _manifest_summary(root),
                        }
                    )

        return {
            "kills": sum(kills.values()),
            "kills_per_operation": {op: kills[op] for op in OPS},
            "completed_not_killed": sum(completed.values()),
            "completed_not_killed_per_operation": {op: completed[op] for op in OPS},
            "operations": ops_run,
            "state_after_operation": dict(outcomes),
            "state_after_operation_per_operation": {op: dict(outcomes_per_op[op]) for op in OPS},
            "unreadable_or_inconsistent": len(failures),
            "failures": failures,
            "blocked_writes": len(blocked),
            "blocked": blocked,
            "writes_after_kill_completed": writes_after_kill_completed,
            "final_write_after_kill": final_write,
            "kills_leaving_debris": kills_with_leftovers,
            "leftovers_after_kills": _kinds(left_after_kill),
            "leftovers_after_completed": _kinds(left_after_completed),
            "calibration_seconds": {k: round(v, 2) for k, v in durations.items()},
            "slide_tiles": tiles_of,
            "recipe": RECIPE,
            "recover_prob": args.recover_prob,
            "seconds": round(time.perf_counter() - t_start, 1),
            "seed": args.seed,
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kinds(counter: collections.Counter[str]) -> dict[str, int]:
    """Leftover counts by kind, the kinds seen only."""
    return {k: counter[k] for k in LEFTOVER_KINDS if counter[k]}


def _manifest_summary(root: Path) -> dict[str, object] | str:
    """generation, state, segments and counts of the manifest on disk, for a failure."""
    try:
        m = json.loads((root / "manifest.json").read_text())
        return {
            "generation": m.get("generation"),
            "state": m.get("state"),
            "segments": [
                (s.get("name"), s.get("tiles"), s.get("dead_slides")) for s in m.get("segments", [])
            ],
            "counts": m.get("counts"),
        }
    except (OSError, ValueError, AttributeError) as exc:
        return f"unreadable: {type(exc).__name__}: {exc}"


def _short(state: dict) -> str:
    """generation / slides / tiles of a state, for messages."""
    return f"(gen {state['generation']}, {state['slides']}, {state['tiles']} tiles)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--kills", type=int, default=60, help="SIGKILLs to deliver")
    p.add_argument(
        "--recover-prob",
        type=float,
        default=0.3,
        help="probability that the operation after a kill runs to completion",
    )
    p.add_argument("--max-ops", type=int, default=1000, help="stop after this many operations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    if args.kills < 1 or not 0.0 <= args.recover_prob < 1.0:
        p.error("--kills must be >= 1 and --recover-prob in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"kills {result['kills']} {result['kills_per_operation']}, completed not killed "
            f"{result['completed_not_killed']} {result['completed_not_killed_per_operation']}, "
            f"unreadable or inconsistent {result['unreadable_or_inconsistent']}, blocked "
            f"writes {result['blocked_writes']}, leftovers after kills "
            f"{result['leftovers_after_kills']}, {result['seconds']} s, seed {result['seed']}"
        )
    return 1 if result["unreadable_or_inconsistent"] or result["blocked_writes"] else 0


if __name__ == "__main__":
    sys.exit(main())
