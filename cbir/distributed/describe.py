"""Describing slides on a Ray cluster: joining the cluster, and the actor state that
plans and describes slides with the recipe's pipeline (a loaded model for learned
descriptors, on a GPU when the cluster has them). cbir.distributed.segments builds on it."""

from __future__ import annotations

import os
import sys
from typing import Any

from cbir.describe import SKIPPABLE, DescribedSlide, SkippedSlide, describe_plan, plan_slide
from cbir.errors import CbirError, EmptyTissueError
from cbir.recipes import Recipe

#: A describer that dies (a lost node, an out-of-memory kill) is restarted this often,
#: and its slide (or segment write) retried, before the build fails.
MAX_RESTARTS = 2


def connect(address: str) -> Any:
    """Join the Ray cluster at `address` ("auto": RAY_ADDRESS or a running local cluster,
    else start one on this machine). Returns the ray module."""
    try:
        import ray
    except ImportError:
        raise CbirError("--ray needs Ray: pip install 'cbir[ray]'") from None
    if not sys.stderr.isatty():  # workers' lines forwarded to a log or pipe: no colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
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
        import logging

        from cbir.pipeline import TilePipeline

        # warnings reach the driver's stderr through Ray: worded as the CLI's own
        logging.basicConfig(format="cbir: %(levelname)s: %(message)s", level=logging.WARNING)
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
            no_tissue = isinstance(exc, EmptyTissueError)
            return SkippedSlide(path=path, reason=str(exc), no_tissue=no_tissue)
