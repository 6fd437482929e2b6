"""Leave-one-out retrieval over a labelled tile folder, with any recipe's pipeline."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.errors import CbirError
from cbir.eval.metrics import (
    average_precision_at_k,
    majority_vote_at_k,
    precision_at_k,
    seed_map_at_k,
)
from cbir.pipeline import TilePipeline
from cbir.recipes import Recipe, load_recipe
from cbir.search.expansion import expanded_leave_one_out
from cbir.search.hamming import hamming_matrix
from cbir.slides.tileset import LabelledTiles, load_labelled_tiles, read_tiles


class MetricSet(BaseModel):
    seed_map_at_10: float
    map_at_10: float
    precision_at_5: float
    precision_at_10: float
    majority_vote_at_5: float
    queries: int


class EvalReport(BaseModel):
    """Leave-one-out retrieval quality. `mean` averages the class means (as seed 000 does);
    `micro` averages all queries."""

    recipe: str
    tiles: int
    classes: int
    protocol: str
    mean: MetricSet
    micro: MetricSet
    per_class: dict[str, MetricSet]
    seconds: float


def ranking(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out order of every item by Hamming distance, ties by index.

    codes (n, bits / 8) uint8 -> order (n, n - 1) int64 indices, D (n, n - 1) int32.
    """
    n = len(codes)
    dist = hamming_matrix(codes, codes).astype(np.int64)
    dist[np.arange(n), np.arange(n)] = np.iinfo(np.int32).max  # the query itself goes last
    return leave_one_out_order(dist)


def leave_one_out_order(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) distances whose diagonal sorts last -> each row's order of the others
    (n, n - 1) int64, ascending, ties by index, and their distances (n, n - 1)."""
    n = len(dist)
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), dist), axis=1)[:, : n - 1]
    return order, np.take_along_axis(dist, order, axis=1)


def _training_paths(weights: Path | None) -> list[str]:
    """Tiles a weights file was trained on (listed in its spec by `cbir train`)."""
    if weights is None:
        return []
    import torch

    from cbir.nn.weights import unloadable

    try:
        data = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise CbirError(f"{weights}: not a readable weights file ({unloadable(exc)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise CbirError(f"{weights}: not a cbir weights file (no spec: made by `cbir train`?)")
    return list(data["spec"].get("train_paths", []))


def _metrics(rows: list[dict[str, float]]) -> MetricSet:
    keys = [
        "seed_map_at_10",
        "map_at_10",
        "precision_at_5",
        "precision_at_10",
        "majority_vote_at_5",
    ]
    return MetricSet(**{k: float(np.mean([r[k] for r in rows])) for k in keys}, queries=len(rows))


def l2_ranking(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out order by squared L2 on (n, d) float32 vectors, ties by index."""
    n = len(x)
    sq = (x.astype(np.float64) ** 2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * (x.astype(np.float64) @ x.astype(np.float64).T)
    dist[np.arange(n), np.arange(n)] = np.inf
    return leave_one_out_order(dist)


def evaluate_tiles(
    root: Path,
    recipe: str | Recipe = "stats-lsh32",
    labels_csv: Path | None = None,
    weights: str | Path | None = None,
    space: str = "code",
    device: str | None = "auto",
    include_training_tiles: bool = False,
    split_from: str | Path | None = None,
    expand: int | None = None,
    allow_untrained: bool = True,
) -> EvalReport:
    """Leave-one-out: every tile queries all the others, ranked by Hamming distance of
    the recipe's codes (`space="code"`) or squared L2 of its descriptors (`"float"`).

    The encoder is fitted on the evaluated tiles (standardisation needs no labels). With
    `weights` whose spec lists training tiles, those are left out of the evaluation
    (queries and database) unless `include_training_tiles`. `split_from`: a weights file
    whose training tiles are left out, to compare any recipe on the same held-out tiles.
    `expand`: query expansion of a float recipe's codes (None: the recipe's; 0: off).
    A learned recipe without weights runs on seeded random weights, said in `protocol`;
    without `allow_untrained` it is refused as `cbir build-index` refuses it.
    """
    start = time.perf_counter()
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    data = load_labelled_tiles(root, labels_csv)
    pipeline = TilePipeline(recipe, weights=weights, device=device)
    if not allow_untrained:
        pipeline.check_trained()
    protocol = "leave-one-out over all tiles"
    trained_on = set() if include_training_tiles else set(_training_paths(pipeline.weights))
    if split_from is not None:
        trained_on |= set(_training_paths(Path(split_from)))
    if trained_on:
        keep = [i for i, p in enumerate(data.paths) if p not in trained_on]
        data = LabelledTiles(
            paths=[data.paths[i] for i in keep], labels=[data.labels[i] for i in keep]
        )
        protocol = f"leave-one-out over the {len(keep)} tiles the weights were not trained on"
    x = pipeline.describe(read_tiles(data.paths, recipe.tiling.tile_size))
    if space == "float":
        order, _ = l2_ranking(x)
        protocol += f"; squared L2 on {x.shape[1]}-d {recipe.descriptor.name} descriptors"
    elif space == "code" and pipeline.binary:
        pipeline.encoder.fit(x)
        order, _ = ranking(pipeline.encode(x))
        protocol += f"; Hamming on {pipeline.encoder_spec.bits}-bit codes fitted on these tiles"
    elif space == "code":  # a float recipe's codes are vectors: squared L2, as its index
        pipeline.encoder.fit(x)
        expand = recipe.search.expand if expand is None else expand
        if expand:
            order = expanded_leave_one_out(pipeline.encode(x), expand, recipe.search.expand_alpha)
        else:
            order, _ = l2_ranking(pipeline.encode(x))
        protocol += (
            f"; squared L2 on the recipe's {pipeline.encoder_spec.dim}-d float vectors "
            "(encoder fitted on these tiles)"
            + (f", queries expanded with their {expand} nearest" if expand else "")
        )
    else:
        raise CbirError(f"space must be 'code' or 'float', not {space!r}")
    if pipeline.untrained:
        protocol += "; untrained: the network's seeded random weights"
    labels = np.array(data.labels)
    per_query: dict[str, list[dict[str, float]]] = defaultdict(list)
    for q, label in enumerate(labels):
        result_labels = labels[order[q]]
        relevant = result_labels == label
        n_relevant = int((labels == label).sum()) - 1
        per_query[str(label)].append(
            {
                "seed_map_at_10": seed_map_at_k(relevant, 10),
                "map_at_10": average_precision_at_k(relevant, 10, n_relevant),
                "precision_at_5": precision_at_k(relevant, 5),
                "precision_at_10": precision_at_k(relevant, 10),
                "majority_vote_at_5": majority_vote_at_k(list(result_labels), 5, str(label)),
            }
        )
    per_class = {c: _metrics(rows) for c, rows in sorted(per_query.items())}
    class_means = MetricSet(
        **{
            k: float(np.mean([getattr(m, k) for m in per_class.values()]))
            for k in MetricSet.model_fields
            if k != "queries"
        },
        queries=len(labels),
    )
    return EvalReport(
        recipe=recipe.name,
        tiles=len(labels),
        classes=len(per_class),
        protocol=protocol,
        mean=class_means,
        micro=_metrics([r for rows in per_query.values() for r in rows]),
        per_class=per_class,
        seconds=round(time.perf_counter() - start, 3),
    )
