"""Retrieval quality: metrics and the leave-one-out harness over labelled tiles."""

from cbir.eval.harness import EvalReport, evaluate_tiles, load_labelled_tiles
from cbir.eval.metrics import (
    average_precision_at_k,
    majority_vote_at_k,
    precision_at_k,
    seed_map_at_k,
)

__all__ = [
    "EvalReport",
    "average_precision_at_k",
    "evaluate_tiles",
    "load_labelled_tiles",
    "majority_vote_at_k",
    "precision_at_k",
    "seed_map_at_k",
]
