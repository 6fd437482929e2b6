"""Describing slides on a Ray cluster (`build-index --ray`, `add --ray`): each slide is
planned and described by an actor that holds the recipe's pipeline (a loaded model for
learned descriptors, on a GPU when the cluster has them); the driver gathers the
described slides, fits the collection-level state and publishes one bundle, as a
single-process build does. Results equal those of `describe_slides`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cbir.describe import SKIPPABLE, DescribedSlide, SkippedSlide, describe_plan, plan_slide
from cbir.errors import CbirError
from cbir.progress import NoProgress, Progress
from cbir.recipes import Recipe

#: A describer that dies (a lost node, an out-of-memory kill) is restarted this often,
#: and its slide retried, before the slide fails.
MAX_RESTARTS = 2


def connect(address: str) -> Any:
    """Join the Ray cluster at `address` ("auto": RAY_ADDRESS or a running local cluster,
    else start one on this machine). Returns the ray module."""
    try:
        import ray
    except ImportError:
        raise CbirError("--ray needs Ray: pip install 'cbir[ray]'") from None
    if not ray.is_initialized():
        if address == "auto" and "RAY_ADDRESS" not in os.environ:
            ray.init(include_dashboard=False, logging_level="WARNING")
        else:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    return ray


class SlideDescriber:
    """A Ray actor's state: one pipeline, used for every slide it is given."""

    def __init__(
        self,
        recipe: Recipe,
        weights: str | None,
        device: str | None,
        base_magnification: float | None,
        min_tissue_fraction: float | None,
        references: bool,
    ) -> None:
        from cbir.pipeline import TilePipeline

        self.recipe = recipe
        self.pipeline = TilePipeline(recipe, weights=weights, device=device)
        self.base_magnification = base_magnification
        self.min_tissue_fraction = min_tissue_fraction
        self.references = references

    def describe(self, path: str) -> DescribedSlide | SkippedSlide:
        """Plan and describe one slide; an unreadable or tissue-less one comes back as a
        SkippedSlide (the driver decides whether that fails the build)."""
        try:
            plan = plan_slide(path, self.recipe, self.base_magnification, self.min_tissue_fraction)
            return describe_plan(plan, self.pipeline, None, None, references=self.references)
        except SKIPPABLE as exc:
            return SkippedSlide(path=path, reason=str(exc))


def describe_slides_ray(
    address: str,
    paths: Sequence[Path],
    recipe: Recipe,
    weights: str | os.PathLike[str] | None,
    device: str | None,
    base_magnification: float | None,
    min_tissue_fraction: float | None,
    progress: Progress | None = None,
    references: bool = False,
    skipped: list[SkippedSlide] | None = None,
    actors: int | None = None,
) -> list[DescribedSlide]:
    """`describe_slides` on Ray: the described slides in the order of `paths`. `actors`:
    describers to start (default: one per 2 CPUs of the cluster, at most one per slide).
    A slide that cannot be read or has no tissue fails the call, or is listed in
    `skipped` when that is given."""
    from cbir.pipeline import LEARNED_DESCRIPTORS

    if not paths:
        return []
    ray = connect(address)
    resources = ray.cluster_resources()
    learned = recipe.descriptor.name in LEARNED_DESCRIPTORS
    gpus = 1 if learned and resources.get("GPU", 0) >= 1 else 0
    n = actors or max(1, int(resources.get("CPU", 1)) // 2)
    if gpus:
        n = min(n, int(resources["GPU"]))
    n = max(1, min(n, len(paths)))
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=MAX_RESTARTS)(SlideDescriber)
    remote = remote.options(max_task_retries=MAX_RESTARTS)
    pool = [
        remote.remote(
            recipe,
            None if weights is None else str(weights),
            "cuda" if gpus else device,
            base_magnification,
            min_tissue_fraction,
            references,
        )
        for _ in range(n)
    ]
    progress = progress or NoProgress()
    progress.start(f"describe on Ray ({n} workers)", len(paths))
    pending = {
        pool[i % n].describe.remote(str(p)): i for i, p in enumerate(paths)
    }  # slides dealt round-robin; each actor runs its slides one after another
    results: list[DescribedSlide | SkippedSlide | None] = [None] * len(paths)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
                progress.advance(1)
    except ray.exceptions.RayError as exc:
        raise CbirError(f"a Ray worker failed describing slides ({exc})") from None
    finally:
        for actor in pool:
            ray.kill(actor)
    described = []
    for result in results:
        if isinstance(result, SkippedSlide):
            if skipped is None:
                raise CbirError(result.reason)
            skipped.append(result)
        elif result is not None:
            described.append(result)
    return described
