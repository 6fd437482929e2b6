"""Ray workers that write their own segments (`build-index --ray`, `add --ray`).

Each actor describes the slides dealt to it and keeps them; for a new bundle the driver
gathers a sample of every slide's descriptors (all of them up to FIT_ROWS_PER_SLIDE, so
small collections are fitted exactly as in one process), fits the encoder and the empty
index, and sends that state back; every actor then encodes its slides and writes one
segment into the bundle's staging area. The driver publishes all segments in one
manifest, or discards every stage when anything fails. Slide ids follow the order of the
paths, as in one process, so the tiles, codes and search results are the same.

A worker that dies (a lost node, an out-of-memory kill, SIGKILL) is restarted and its
calls run again (MAX_RESTARTS): each attempt at a segment writes its own stage
(`.tmp-ray-<pid>-<token>-<segment>`), the driver keeps the one the successful attempt
reports and removes the others, so a dead worker costs only its retry."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir.describe import DescribedSlide, SkippedSlide, Skips
from cbir.distributed.describe import MAX_RESTARTS, SlideDescriber, connect
from cbir.errors import CbirError
from cbir.progress import NoProgress, Progress
from cbir.recipes import Recipe
from cbir.storage.manifest import SegmentEntry, segment_name
from cbir.storage.state import CollectionState
from cbir.storage.store import SlideSummary, empty_index_for
from cbir.storage.writer import BundleWriter
from cbir.timing import StageTimer

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage

#: Descriptors per slide sent to the driver to fit the collection state (a sample
#: beyond this: evenly spaced rows).
FIT_ROWS_PER_SLIDE = 200_000

#: One attempt's stage of a segment: `.tmp-` (a leftover the bundle writer sweeps when
#: its writer died), the worker's pid, a random token, the segment's name.
_ATTEMPT = re.compile(r"\.tmp-ray-(\d+)-([0-9a-f]{8})-(.+)")

#: Tests only: a directory; while it exists, the first worker to reach the middle of
#: `write_segment` writes its pid to `pid` there and sleeps PAUSE_SECONDS, so that a
#: test can kill it from outside at that point.
PAUSE_ENV = "CBIR_TEST_RAY_PAUSE"
PAUSE_SECONDS = 60.0


def attempt_stage(root: Path, name: str) -> Path:
    """A fresh stage path for this process's attempt at segment `name` of bundle `root`."""
    return root / f".tmp-ray-{os.getpid()}-{secrets.token_hex(4)}-{name}"


def attempt_stages(root: Path, name: str) -> list[Path]:
    """Every attempt's stage of segment `name` in `root` (dead, failed or finished)."""
    out = []
    for p in root.iterdir() if root.is_dir() else ():
        m = _ATTEMPT.fullmatch(p.name)
        if m is not None and m.group(3) == name:
            out.append(p)
    return out


def pause_for_tests() -> None:
    """Tests only (PAUSE_ENV names an existing directory): the first worker to get here
    claims it, writes its pid to `pid` there and sleeps, to be killed from outside."""
    d = os.environ.get(PAUSE_ENV)
    if not d or not os.path.isdir(d):
        return
    try:
        os.close(os.open(os.path.join(d, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    Path(d, "pid.tmp").write_text(str(os.getpid()))
    os.replace(Path(d, "pid.tmp"), Path(d, "pid"))
    time.sleep(PAUSE_SECONDS)


@dataclass
class StateBlob:
    """A fitted collection state in a form Ray ships: encoder arrays, serialised empty
    index, and whether scale references are stored."""

    encoder: dict[str, np.ndarray]
    empty_index: np.ndarray
    index_kind: str
    references: bool


class SegmentWorker(SlideDescriber):
    """A describer that keeps what it described and writes it as one segment."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.kept: dict[str, DescribedSlide] = {}

    def describe_and_keep(
        self, path: str, sample: bool
    ) -> tuple[int, np.ndarray | None] | SkippedSlide:
        """Describe a slide and keep it; returns its tile count and (with `sample`) its
        descriptors for fitting: all of them, or FIT_ROWS_PER_SLIDE evenly spaced."""
        out = self.describe(path)
        if isinstance(out, SkippedSlide):
            return out
        self.kept[path] = out
        if not sample:
            return out.n_tiles, None
        x = np.concatenate([s.descriptors for s in out.scales])
        if len(x) > FIT_ROWS_PER_SLIDE:
            x = x[np.linspace(0, len(x) - 1, FIT_ROWS_PER_SLIDE).astype(np.int64)]
        return out.n_tiles, x

    def write_segment(
        self, root: str, name: str, slides: list[tuple[str, int]], blob: StateBlob
    ) -> tuple[str, SegmentEntry, list[SlideSummary]]:
        """Encode the kept slides (path, slide id) with the fitted state and write them
        as one finished segment `name`, staged in bundle `root` under a name of this
        attempt's own. Returns the stage's path, its entry and the slides' summaries."""
        from cbir.index.tile import tile_index_from_bytes
        from cbir.storage.artifacts import finish_segment
        from cbir.storage.state import SegmentStage
        from cbir.storage.store import store_slides
        from cbir.timing import StageTimer

        self.pipeline.encoder.load_state(blob.encoder)
        empty = tile_index_from_bytes(blob.empty_index, blob.index_kind, self.recipe.index)
        scale = Path("(driver)") if blob.references else None  # presence only
        state = CollectionState(self.pipeline, empty, scale)
        seg = SegmentStage(attempt_stage(Path(root), name), name)
        try:
            summaries: list[SlideSummary] = []
            for path, sid in slides:
                described = self.kept.pop(path, None)
                if described is None:  # this actor was restarted: describe the slide again
                    again = self.describe(path)
                    if isinstance(again, SkippedSlide):
                        raise CbirError(again.reason)
                    described = again
                summaries += store_slides(seg, state, [described], sid, StageTimer())
                pause_for_tests()
            return str(seg.path), finish_segment(seg, state), summaries
        except BaseException:
            seg.discard()
            raise


class WrittenSegment:
    """A segment Ray workers are writing into the bundle `root` (one stage per attempt):
    `keep` takes the successful attempt's stage, publish takes its entry as it is,
    discard removes every attempt's stage."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.stage: Path | None = None
        self.entry: SegmentEntry | None = None

    @property
    def path(self) -> Path:
        """The successful attempt's stage."""
        assert self.stage is not None, "the worker did not finish this segment"
        return self.stage

    def keep(self, stage: Path, entry: SegmentEntry) -> None:
        """Take the attempt at `stage` (its entry) and remove the other attempts."""
        if _ATTEMPT.fullmatch(stage.name) is None or stage.parent != self.root:
            raise CbirError(f"a Ray worker wrote segment {self.name} outside {self.root}")
        self.stage, self.entry = stage, entry
        for p in attempt_stages(self.root, self.name):
            if p != stage:
                shutil.rmtree(p, ignore_errors=True)

    @property
    def staged(self) -> bool:
        return True

    @property
    def staged_tiles(self) -> int:
        return 0 if self.entry is None else self.entry.tiles

    def finish(self, state: CollectionState) -> SegmentEntry:
        assert self.entry is not None, "the worker did not finish this segment"
        return self.entry

    def discard(self) -> None:
        for p in attempt_stages(self.root, self.name):
            shutil.rmtree(p, ignore_errors=True)


def write_segments_ray(
    writer: BundleWriter,
    address: str,
    paths: Sequence[Path],
    recipe: Recipe,
    weights: str | None,
    device: str | None,
    base_magnification: float | None,
    min_tissue_fraction: float | None,
    progress: Progress | None = None,
    references: bool = False,
    skipped: Skips | None = None,
    actors: int | None = None,
    fit: CollectionState | None = None,
) -> list[SlideSummary]:
    """Describe `paths` on Ray and have each worker write its slides as one segment of
    `writer`'s transaction. `fit`: the state to fit on the gathered sample (a new
    bundle; it gets its empty index too); None: use `writer.state` (an add)."""
    from cbir.descriptors import is_learned

    ray = connect(address)
    resources = ray.cluster_resources()
    gpus = 1 if is_learned(recipe.descriptor.name) and resources.get("GPU", 0) else 0
    n = actors or max(1, int(resources.get("CPU", 1)) // 2)
    n = max(1, min(n if not gpus else min(n, int(resources["GPU"])), len(paths)))
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=MAX_RESTARTS)(SegmentWorker)
    remote = remote.options(max_task_retries=MAX_RESTARTS)  # a lost worker's task runs again
    args = (
        recipe,
        weights,
        "cuda" if gpus else device,
        base_magnification,
        min_tissue_fraction,
        references,
    )
    pool = [remote.remote(*args) for _ in range(n)]
    progress = progress or NoProgress()
    progress.start(f"describe on Ray ({n} workers)", len(paths), "slides")
    owner = {str(p): i % n for i, p in enumerate(paths)}
    try:
        pending = {
            pool[owner[str(p)]].describe_and_keep.remote(str(p), fit is not None): str(p)
            for p in paths
        }
        results: dict[str, Any] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
                progress.advance(1)
        kept = []
        for p in map(str, paths):
            if isinstance(results[p], SkippedSlide):
                if skipped is None:
                    raise CbirError(results[p].reason)
                skipped.keep(results[p])
            else:
                kept.append(p)
        if not kept:
            return []
        state = fit if fit is not None else writer.state
        assert state is not None
        if fit is not None:
            x = np.concatenate([results[p][1] for p in kept])
            fit.pipeline.encoder.fit(x)
            fit.empty_index = empty_index_for(fit.pipeline, recipe, fit.pipeline.encode(x))
            writer.state = fit
        assert state.empty_index is not None
        blob = StateBlob(
            state.pipeline.encoder.state(),
            state.empty_index.to_bytes(),
            state.empty_index.kind,
            state.scale_weights is not None,
        )
        root = writer.root.resolve()  # the workers' working directory may differ
        first = writer.take_slide_ids(len(kept))
        ids = {p: first + i for i, p in enumerate(kept)}
        jobs = {}
        for k in sorted({owner[p] for p in kept}):
            mine = [(p, ids[p]) for p in kept if owner[p] == k]
            name = segment_name(writer.generation, len(writer.segments))
            written = WrittenSegment(root, name)
            writer.segments.append(written)  # type: ignore[arg-type]  # discarded on failure
            jobs[pool[k].write_segment.remote(str(root), name, mine, blob)] = written
        summaries: list[SlideSummary] = []
        for ref, written in jobs.items():
            stage, entry, done_slides = ray.get(ref)
            written.keep(Path(stage), entry)
            summaries += done_slides
    except ray.exceptions.RayError as exc:
        raise CbirError(f"a Ray worker failed describing or writing slides ({exc})") from None
    finally:
        for actor in pool:
            ray.kill(actor)
    return sorted(summaries, key=lambda s: s.slide_id)


def on_ray(
    writer: BundleWriter,
    ray: str,
    paths: Sequence[Path],
    recipe: Recipe,
    weights: str | os.PathLike[str] | None,
    device: str | None,
    base_magnification: float | None,
    min_tissue_fraction: float | None,
    progress: Progress | None,
    timer: StageTimer,
    skipped: Skips | None,
    local: LocalStage | None,
    workers: int | None = None,
    fit: CollectionState | None = None,
) -> list[SlideSummary]:
    """Describe the slides on the Ray cluster at `ray`, each worker writing its slides as
    one segment of the transaction (cbir.distributed.segments); `fit`: a new bundle's state."""
    if local is not None:
        raise CbirError(
            "--ray: bundles with local features (--local-weights, delf recipes) are "
            "described in one process for now; leave out --ray"
        )
    with timer("describe (ray)"):
        return write_segments_ray(
            writer,
            ray,
            paths,
            recipe,
            None if weights is None else str(weights),
            device,
            base_magnification,
            min_tissue_fraction,
            progress,
            references=writer.scale_weights is not None
            or (fit is not None and fit.scale_weights is not None),
            skipped=skipped,
            actors=workers,
            fit=fit,
        )
