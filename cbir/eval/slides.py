"""Slide retrieval quality: a folder of labelled slides is indexed, then every slide is
the query, leaving out its own case (leave-one-case-out), as Yottixel and SISH report
it: Acc@k (a slide of the query's label in the top k), MV@k (the majority label of the
top k is the query's), mAP@5 and macro-F1 of the top-1 label, per class and averaged."""

from __future__ import annotations

import csv
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from cbir.errors import CbirError
from cbir.eval.metrics import average_precision_at_k, majority_vote_at_k

LABEL_KEY, CASE_KEY = "label", "case"


class SlideMetricSet(BaseModel):
    acc_at_1: float
    acc_at_3: float
    acc_at_5: float
    mv_at_1: float
    mv_at_3: float
    mv_at_5: float
    map_at_5: float
    f1: float | None = None  # of the top-1 label (per class; the mean's is macro-F1)
    queries: int


class SlideQueryRow(BaseModel):
    slide: str
    label: str
    case: str
    found: list[str]  # the top 5 slides
    found_labels: list[str]


class SlideEvalReport(BaseModel):
    recipe: str
    method: str
    slides: int
    classes: int
    protocol: str
    mean: SlideMetricSet  # the class means averaged; f1 is macro-F1
    micro: SlideMetricSet  # every query alike
    per_class: dict[str, SlideMetricSet]
    skipped: list[str]  # slides left out of the index (no tissue), not queried
    queries: list[SlideQueryRow]
    seconds: float


def read_slide_labels(folder: Path, labels: Path) -> list[tuple[Path, str, str]]:
    """(path, label, case) per row of a CSV with columns slide, label and optionally case
    (slide: a path, or a file name in `folder`; no case: each slide is its own)."""
    if not labels.is_file():
        raise CbirError(f"{labels}: no such labels file (CSV: slide,label[,case])")
    with open(labels, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if not {"slide", "label"} <= columns:
            raise CbirError(f"{labels}: needs columns slide,label[,case]; has {sorted(columns)}")
        rows = list(reader)
    out, seen = [], set()
    for n, row in enumerate(rows, 2):
        name, label = (row.get("slide") or "").strip(), (row.get("label") or "").strip()
        path = Path(name) if Path(name).is_absolute() else folder / name
        if not name or not label:
            raise CbirError(f"{labels}: line {n}: empty slide or label")
        if not path.exists():
            raise CbirError(f"{labels}: line {n}: {path}: no such slide")
        if path.resolve() in seen:
            raise CbirError(f"{labels}: line {n}: {name} is listed twice")
        seen.add(path.resolve())
        out.append((path, label, (row.get("case") or "").strip() or f"slide:{name}"))
    if len({label for _, label, _ in out}) < 2:
        raise CbirError(f"{labels}: slide retrieval needs at least two labels")
    return out


def _row_metrics(labels: list[str], label: str, relevant_total: int) -> dict[str, float]:
    rel = np.array([x == label for x in labels], dtype=bool)
    out = {f"acc_at_{k}": float(rel[:k].any()) for k in (1, 3, 5)}
    out |= {f"mv_at_{k}": majority_vote_at_k(labels, k, label) for k in (1, 3, 5)}
    out["map_at_5"] = average_precision_at_k(rel, 5, relevant_total)
    return out


def _metric_set(rows: list[dict[str, float]], f1: float | None) -> SlideMetricSet:
    keys = rows[0].keys()
    return SlideMetricSet(
        **{k: float(np.mean([r[k] for r in rows])) for k in keys}, f1=f1, queries=len(rows)
    )


def _f1(rows: list[SlideQueryRow], cls: str) -> float:
    """F1 of class `cls` for the top-1 label (no hit: predicts nothing)."""
    predicted = [r.found_labels[0] if r.found_labels else None for r in rows]
    tp = sum(p == cls and r.label == cls for p, r in zip(predicted, rows, strict=True))
    n_pred, n_true = predicted.count(cls), sum(r.label == cls for r in rows)
    return 0.0 if tp == 0 else 2 * tp / (n_pred + n_true)


def evaluate_slides(
    folder: Path,
    labels: Path | None = None,
    recipe: str = "stats-lsh32",
    *,
    method: str = "pooled",
    weights: Path | None = None,
    device: str | None = "auto",
    workdir: Path | None = None,
) -> SlideEvalReport:
    """Index the labelled slides of `folder` (labels: CSV slide,label[,case]; default
    folder/labels.csv) into `workdir` (None: a temporary folder), then query each slide
    with its case left out."""
    import cbir

    start = time.perf_counter()
    listed = read_slide_labels(folder, labels or folder / "labels.csv")
    by_path = {str(p.resolve()): {LABEL_KEY: lab, CASE_KEY: case} for p, lab, case in listed}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "slides-idx"
        report = cbir.build_index(
            [p for p, _, _ in listed], root, recipe, labels=by_path, weights=weights, device=device
        )
        rows: list[SlideQueryRow] = []
        with cbir.open_index(root, device=device) as ix:
            indexed = {r.info.path: r for r in ix.slides.values()}
            for path, label, case in listed:
                if str(path.resolve()) not in indexed:
                    continue
                result = ix.search_slide(
                    path.resolve(),
                    k=5,
                    method=method,
                    exclude_query_slide=True,
                    case_label=CASE_KEY,
                )
                rows.append(
                    SlideQueryRow(
                        slide=path.name,
                        label=label,
                        case=case,
                        found=[h.slide for h in result.hits],
                        found_labels=[h.labels.get(LABEL_KEY, "") for h in result.hits],
                    )
                )
    if not rows:
        raise CbirError(f"{folder}: no slide was indexed (no tissue in any)")
    relevant = {r.slide: sum(o.label == r.label and o.case != r.case for o in rows) for r in rows}
    per_row = [_row_metrics(r.found_labels, r.label, relevant[r.slide]) for r in rows]
    grouped: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r, m in zip(rows, per_row, strict=True):
        grouped[r.label].append(m)
    per_class = {c: _metric_set(ms, _f1(rows, c)) for c, ms in sorted(grouped.items())}
    means = {k: float(np.mean([getattr(m, k) for m in per_class.values()])) for k in per_row[0]}
    return SlideEvalReport(
        recipe=report.recipe,
        method=method,
        slides=len(rows),
        classes=len(per_class),
        protocol="leave-one-case-out: each slide queries the index without its own case",
        mean=SlideMetricSet(
            **means, f1=float(np.mean([m.f1 for m in per_class.values()])), queries=len(rows)
        ),
        micro=_metric_set(per_row, None),
        per_class=per_class,
        skipped=[s.path for s in report.skipped],
        queries=rows,
        seconds=round(time.perf_counter() - start, 3),
    )
