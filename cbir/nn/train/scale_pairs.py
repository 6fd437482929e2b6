"""Same/different-magnification tile pairs cut from a user's slides (for `train scale`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbir.describe import plan_slide
from cbir.errors import CbirError, EmptyTissueError
from cbir.recipes import Recipe, TilingConfig, load_recipe
from cbir.slides import open_slide

log = logging.getLogger("cbir")


@dataclass
class ScaleTiles:
    """Tissue tiles per magnification, split by position into train and held-out sets.

    tiles[split][magnification]: (n, t, t, 3) uint8. A slide's bottom `holdout` fraction
    (by tile centre) is held out, so no held-out tile overlaps a training one.
    """

    tiles: dict[str, dict[float, np.ndarray]]


def sample_scale_tiles(
    slides: list[Path],
    magnifications: tuple[float, ...],
    per_magnification: int = 64,
    holdout: float = 0.3,
    seed: int = 0,
    base_magnification: float | None = None,
    recipe: Recipe | None = None,
) -> ScaleTiles:
    """Read up to `per_magnification` tissue tiles per slide, magnification and split; a
    slide without a tissue tile is left out with a warning, as a build leaves it out."""
    base = recipe or load_recipe("stats-lsh32")
    tiling = TilingConfig(
        tile_size=base.tiling.tile_size,
        magnifications=magnifications,
        min_tissue_fraction=base.tiling.min_tissue_fraction,
    )
    recipe = base.model_copy(update={"tiling": tiling})
    rng = np.random.default_rng(seed)
    found: dict[str, dict[float, list[np.ndarray]]] = {"train": {}, "held": {}}
    skipped: list[str] = []
    for path in slides:
        try:
            plan = plan_slide(path, recipe, base_magnification)
        except EmptyTissueError as exc:  # as a build does: a warning, the others go on
            log.warning("skipping %s", exc)
            skipped.append(str(exc))
            continue
        with open_slide(path, base_magnification) as slide:
            height = slide.dimensions[1]
            for grid, keep in zip(plan.grids, plan.keeps, strict=True):
                rr, cc = np.nonzero(keep)
                centre_y = (rr + 0.5) * grid.step
                held = centre_y > (1 - holdout) * height
                for split, mask in (("train", ~held), ("held", held)):
                    cells = np.flatnonzero(mask)
                    take = rng.permutation(cells)[:per_magnification]
                    for i in take.tolist():
                        x, y, w, h = grid.rect(int(rr[i]), int(cc[i]))
                        tile = slide.read_region(x, y, w, h, grid.magnification)
                        t = recipe.tiling.tile_size
                        found[split].setdefault(grid.magnification, []).append(tile[:t, :t])
    if len(skipped) == len(slides):
        raise EmptyTissueError(
            f"no slide has a tissue tile: {skipped[0]}" if skipped else "no slides"
        )
    return ScaleTiles({s: {m: np.stack(v) for m, v in d.items()} for s, d in found.items()})


def make_pairs(
    tiles: dict[float, np.ndarray], n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced pairs: half at one magnification, half at two different ones.

    Returns a, b (n, t, t, 3) uint8 and same (n,) float32 (1 = same magnification).
    """
    mags = sorted(m for m, v in tiles.items() if len(v) >= 2)
    if len(mags) < 2:
        raise CbirError(
            "need tissue tiles at two or more magnifications to make pairs (give "
            "--magnifications with two or more different values that the slides have)"
        )
    a, b, same = [], [], []
    for i in range(n_pairs):
        if i % 2 == 0:
            m = mags[rng.integers(len(mags))]
            j, k = rng.choice(len(tiles[m]), 2, replace=False)
            a.append(tiles[m][j]), b.append(tiles[m][k]), same.append(1.0)
        else:
            m1, m2 = rng.choice(mags, 2, replace=False)
            a.append(tiles[m1][rng.integers(len(tiles[m1]))])
            b.append(tiles[m2][rng.integers(len(tiles[m2]))])
            same.append(0.0)
    return np.stack(a), np.stack(b), np.array(same, dtype=np.float32)
