"""Ranking metrics for one query: `relevant` is (k',) bool, True where the result at rank
n (1-based position n - 1) has the query's class; results beyond k are ignored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def seed_map_at_k(relevant: np.ndarray, k: int) -> float:
    """Seed 000's "MAP@k", a 1/n rank-weighted precision:
    sum_{n<=k} (1/n) [class_n = class_q] / sum_{n<=k} (1/n)."""
    rel = np.asarray(relevant[:k], dtype=np.float64)
    weights = 1.0 / np.arange(1, k + 1)
    return float((weights[: len(rel)] * rel).sum() / weights.sum())


def average_precision_at_k(relevant: np.ndarray, k: int, n_relevant: int) -> float:
    """Standard AP@k: sum_{n<=k} P@n [rel_n] / min(k, R), R = relevant items in the
    collection (the query excluded). 0 when R = 0."""
    rel = np.asarray(relevant[:k], dtype=np.float64)
    if n_relevant == 0:
        return 0.0
    precision_at_n = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision_at_n * rel).sum() / min(k, n_relevant))


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Fraction of the top k with the query's class (missing results count as wrong)."""
    return float(np.asarray(relevant[:k], dtype=np.float64).sum() / k)


def majority_vote_at_k(result_labels: Sequence[str], k: int, query_label: str) -> float:
    """1.0 when the most frequent class among the top k is the query's, else 0.0.
    A tie between classes goes to the one whose best rank is highest."""
    top = list(result_labels[:k])
    if not top:
        return 0.0
    counts = Counter(top)
    best = max(counts.values())
    winner = next(label for label in top if counts[label] == best)
    return float(winner == query_label)
