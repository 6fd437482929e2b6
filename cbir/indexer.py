"""Indexing: slides -> tiles -> descriptors -> codes -> Faiss + LMDB, in one transaction
(`build_index`, `add_slides`, `remove_slides`). Describing slides is cbir.describe,
storing them cbir.storage.store."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from cbir.delf.stage import LocalStage
from cbir.describe import DescribedSlide, Skips, describe_slides
from cbir.distributed.segments import on_ray
from cbir.errors import (
    BundleMismatchError,
    CbirError,
    DuplicateSlideError,
    SlideReadError,
)
from cbir.files import one_or_many
from cbir.pipeline import TilePipeline
from cbir.progress import Progress
from cbir.recipes import LocalConfig, Recipe, load_recipe
from cbir.storage.artifacts import TileCodes
from cbir.storage.compact import auto_compact
from cbir.storage.report import IndexReport, index_report
from cbir.storage.segment_meta import SegmentedMeta
from cbir.storage.state import CollectionState
from cbir.storage.store import SlideSummary, store_slides, write_new_bundle
from cbir.storage.writer import BundleWriter, transaction
from cbir.timing import StageTimer


def _unique_paths(paths: Sequence[str | os.PathLike[str]], skipped: Skips) -> list[Path]:
    """Absolute paths, duplicates dropped (first kept); SlideReadError naming a path that
    cannot be resolved (a symlink loop), or an entry in `skipped` when it leaves such
    slides out."""
    seen: dict[Path, None] = {}
    for p in one_or_many(paths):
        try:
            seen.setdefault(Path(p).resolve(), None)
        except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            skipped.take(p, SlideReadError(f"{p}: cannot resolve the path ({exc})"))
    return list(seen)


def _nothing_left(skipped: Skips) -> CbirError:
    return CbirError(
        f"no slide could be indexed: all {len(skipped)} were skipped (first: {skipped[0].reason})"
    )


def build_index(
    slides: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    recipe: str | os.PathLike[str] | Recipe = "stats-lsh32",
    *,
    base_magnification: float | None = None,
    min_tissue_fraction: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | None = "auto",
    scale_weights: str | os.PathLike[str] | None = None,
    local_weights: str | os.PathLike[str] | None = None,
    skip_errors: bool = False,
    ray: str | None = None,
    ray_workers: int | None = None,
    labels: dict[str, dict[str, str]] | None = None,
    per_slide: dict[str, tuple[float | None, float | None]] | None = None,
    untrained: bool = False,
) -> IndexReport:
    """Index `slides` into a new bundle at `out` (atomic: on any error nothing is written).
    A learned recipe without its weights is refused unless `untrained` (seeded random
    weights, a baseline).
    A slide without a tissue tile (or smaller than one tile) is always left out, listed in
    the report's `skipped` with `no_tissue`; `skip_errors`: leave out unreadable slides
    too instead of failing. It fails when none is left. `ray`: describe
    the slides on the Ray cluster at this address ("auto": join or start one); the
    bundle is the same as without; `ray_workers` describers (default: one per 2 CPUs).
    `weights`: model file of a learned descriptor, copied into the bundle;
    `scale_weights`: a scale comparator (`cbir train scale`, Index.scale_probabilities);
    `local_weights`: DELF weights (`cbir train delf`): store local features for `--verify`
    (recipes with a [local] section have them anyway). `labels`: by slide path;
    `per_slide`: (base magnification, min tissue fraction) by slide path (one process)."""
    start = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(str(recipe))
    skipped = Skips(unreadable=skip_errors)
    paths = _unique_paths(slides, skipped)
    if not paths:
        raise _nothing_left(skipped) if skipped else CbirError("no slides given")
    timer = StageTimer()
    pipeline = TilePipeline(recipe, weights=weights, device=device)
    if not untrained:
        pipeline.check_trained()
    recipe, local = local_stage_for(recipe, weights, local_weights, device)
    if scale_weights is not None:
        from cbir.nn.weights import load_weights

        load_weights(scale_weights, "scale")  # refuse a wrong file before any work
    scale = Path(scale_weights) if scale_weights is not None else None
    with transaction(out, create=True, overwrite=overwrite) as writer:
        if ray is not None:
            fit = CollectionState(pipeline, None, scale)
            summaries = on_ray(
                writer,
                ray,
                paths,
                recipe,
                weights,
                device,
                base_magnification,
                min_tissue_fraction,
                progress,
                timer,
                skipped,
                local,
                ray_workers,
                fit,
            )
            if not summaries:
                assert skipped
                raise _nothing_left(skipped)
            give_labels(writer, summaries, labels or {})
            with timer("commit"):
                manifest = writer.commit(recipe)
            return index_report(out, manifest, summaries, [], [], start, timer, skipped)
        described = describe_slides(
            paths,
            pipeline,
            recipe,
            base_magnification,
            min_tissue_fraction,
            progress,
            timer,
            references=scale is not None,
            local=local,
            skipped=skipped,
            per_slide=per_slide,
        )
        if not described:
            assert skipped
            raise _nothing_left(skipped)
        summaries, manifest = write_new_bundle(
            writer,
            recipe,
            pipeline,
            described,
            timer,
            local,
            scale,
            labels,
        )
    return index_report(out, manifest, summaries, [], [], start, timer, skipped)


def local_stage_for(
    recipe: Recipe,
    weights: str | os.PathLike[str] | None,
    local_weights: str | os.PathLike[str] | None,
    device: str | None,
) -> tuple[Recipe, LocalStage | None]:
    """The recipe as the bundle records it and its local stage (None without local
    features). `local_weights` adds the default [local] section to a recipe without one;
    a recipe whose descriptor is `delf` shares the descriptor's weights by default."""
    if local_weights is not None and recipe.local is None:
        recipe = recipe.model_copy(update={"local": LocalConfig()})
    if recipe.local is None:
        return recipe, None
    if local_weights is None and recipe.descriptor.name == "delf":
        local_weights = weights
    path = Path(local_weights) if local_weights is not None else None
    return recipe, LocalStage(recipe.local, path, device)


def _check_recipe(bundle_recipe: Recipe, recipe: str | Recipe | None, out: object) -> None:
    if recipe is None:
        return
    wanted = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if wanted.name != bundle_recipe.name:
        raise BundleMismatchError(
            f"{out}: bundle was built with recipe {bundle_recipe.name!r}, not {wanted.name!r}"
        )
    differ = spec_differences(TileCodes.recipe_spec(bundle_recipe), TileCodes.recipe_spec(wanted))
    if differ:
        raise BundleMismatchError(
            f"{out}: bundle's {bundle_recipe.name!r} has other descriptor or encoder "
            f"parameters than the recipe file {wanted.name!r}: {'; '.join(differ[:4])} "
            "(add without --recipe to use the bundle's own)"
        )


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


_MISSING = _Missing()


def spec_differences(have: object, want: object, at: str = "") -> list[str]:
    """Where two nested recipe specs differ: 'encoder.params.store: bundle 'float32',
    recipe 'float16'' per differing leaf (a key on one side only: '(not set)')."""
    if isinstance(have, dict) and isinstance(want, dict):
        return [
            line
            for key in sorted({*have, *want})
            for line in spec_differences(
                have.get(key, _MISSING), want.get(key, _MISSING), f"{at}{key}."
            )
        ]
    if have is not _MISSING and want is not _MISSING and have == want:
        return []
    return [f"{at.rstrip('.')}: bundle {have!r}, recipe {want!r}"]


def add_slides(
    index_path: str | os.PathLike[str],
    slides: Sequence[str | os.PathLike[str]],
    *,
    recipe: str | Recipe | None = None,
    replace: bool = False,
    base_magnification: float | None = None,
    min_tissue_fraction: float | None = None,
    progress: Progress | None = None,
    skip_errors: bool = False,
    ray: str | None = None,
    device: str | None = "auto",
) -> IndexReport:
    """Add slides to a bundle with its stored pipeline (no refit). A slide already present
    raises `DuplicateSlideError` unless `replace`, which re-indexes it with the base
    magnification and tissue fraction it was indexed with, unless given (in this process;
    `ray` workers take the given or default ones). `skip_errors`: as
    for `build_index` (a skipped slide that was to be replaced stays as it was); `ray`
    as for `build_index`."""
    start = time.perf_counter()
    timer = StageTimer()
    skipped = Skips(unreadable=skip_errors)
    paths = _unique_paths(slides, skipped)
    if not paths:
        raise _nothing_left(skipped) if skipped else CbirError("no slides given")
    with transaction(index_path, create=False) as writer:
        assert writer.previous is not None
        bundle_recipe = writer.previous.recipe
        _check_recipe(bundle_recipe, recipe, index_path)
        pipeline = writer.pipeline
        replaced = []
        assert writer.live is not None
        records = {r.info.path: r for r in writer.live.meta.slide_list()}
        before = [(r.checksum, path) for path, r in records.items()]
        for p in paths:
            if writer.slide_id_for_path(str(p)) is not None:
                if not replace:
                    raise DuplicateSlideError(
                        f"{p}: already in {index_path} (use --replace to re-index it)"
                    )
                replaced.append(str(p))
        # a replaced slide keeps the settings it was indexed with unless given again
        kept = {
            p: (
                base_magnification
                if base_magnification is not None or r.info.magnification_source != "given"
                else r.info.base_magnification,
                r.min_tissue_fraction if min_tissue_fraction is None else min_tissue_fraction,
            )
            for p, r in ((p, records.get(p)) for p in replaced)
            if r is not None
        }
        if ray is not None:
            summaries = on_ray(
                writer,
                ray,
                paths,
                bundle_recipe,
                pipeline.weights,
                device,
                base_magnification,
                min_tissue_fraction,
                progress,
                timer,
                skipped,
                writer.local,
            )
            described: list[DescribedSlide] = []
        else:
            described = describe_slides(
                paths,
                pipeline,
                bundle_recipe,
                base_magnification,
                min_tissue_fraction,
                progress,
                timer,
                references=writer.scale_weights is not None,
                local=writer.local,
                skipped=skipped,
                per_slide=kept,
            )
            summaries = []
        if not described and not summaries:
            assert skipped
            raise _nothing_left(skipped)
        left_out = {s.path for s in skipped}
        replaced = [p for p in replaced if p not in left_out]
        summaries += add_described(writer, described, timer, replaced, written=summaries)
        with timer("commit"):
            manifest = writer.commit(bundle_recipe)
    indexed: dict[str, str] = {}
    for checksum, path in before:
        if path not in replaced:
            indexed.setdefault(checksum, path)
    return index_report(
        index_path, manifest, summaries, replaced, [], start, timer, skipped, indexed
    )


def add_described(
    writer: BundleWriter,
    described: list[DescribedSlide],
    timer: StageTimer,
    replaced: Sequence[str] = (),
    compact: bool = True,
    written: Sequence[SlideSummary] = (),
) -> list[SlideSummary]:
    """In an open write transaction: tombstone the slides at `replaced` paths, store the
    described slides in a new segment (a re-indexed slide keeps its labels, as do those
    `written` already by Ray workers), then merge segments as the recipe's limits ask
    (`compact`). Returns the summaries of the slides stored here."""
    old = {p: writer.slide_id_for_path(p) for p in replaced}
    labels = {p: writer.labels[sid] for p, sid in old.items() if sid in writer.labels}
    with timer("remove"):
        writer.tombstone({sid for sid in old.values() if sid is not None})
    summaries: list[SlideSummary] = []
    if described:
        seg = writer.new_segment()
        first = writer.take_slide_ids(len(described))
        assert writer.state is not None
        summaries = store_slides(seg, writer.state, described, first, timer)
    give_labels(writer, [*written, *summaries], labels)
    if compact:
        with timer("compact"):
            auto_compact(writer)
    return summaries


def give_labels(
    writer: BundleWriter, summaries: Sequence[SlideSummary], labels: dict[str, dict[str, str]]
) -> None:
    """Give newly stored slides the labels of their paths (re-indexed, rebuilt)."""
    for summary in summaries:
        if labels.get(summary.path):
            writer.labels[summary.slide_id] = labels[summary.path]


def resolve_slide(meta: SegmentedMeta, name_or_path: str, bundle: object) -> str:
    """The stored path of a slide given by path or by file name (which must be unique)."""
    from cbir.storage.slide_names import find_slide

    return find_slide(meta.slide_list(), name_or_path, bundle).info.path


def remove_slides(index_path: str | os.PathLike[str], slides: Sequence[str]) -> IndexReport:
    """Remove slides (by path or unique file name) from a bundle, atomically."""
    start = time.perf_counter()
    timer = StageTimer()
    with transaction(index_path, create=False) as writer:
        assert writer.live is not None and writer.previous is not None
        stored = [resolve_slide(writer.live.meta, s, index_path) for s in one_or_many(slides)]
        with timer("remove"):
            writer.tombstone({writer.live.meta.slide_id_for_path(p) for p in stored} - {None})
        with timer("compact"):
            auto_compact(writer)
        manifest = writer.commit(writer.previous.recipe)
    return index_report(index_path, manifest, [], [], list(dict.fromkeys(stored)), start, timer)
