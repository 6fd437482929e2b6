"""Slide retrieval on a labelled slide set cut from the shared slides: each shared slide
(and the embedded sample) is cut into non-overlapping parts, written as TIFF slides
labelled by their source, and `cbir evaluate --slides` runs leave-one-case-out for each
recipe and ranking method.

    cd tools && python eval_slides.py --recipes stats-lsh32,effnet-flat --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi"

#: (source, label, rows, cols, parts per case)
LAYOUT = (
    ("cmu-1-small-region.svs", "cmu", 3, 2, 2),
    ("tcga-cr-7395-01a-01-ts1.svs", "tcga", 3, 3, 3),
    ("<sample>", "ihc", 2, 2, 2),
)


def make_set(out: Path) -> Path:
    """Write the parts and their labels.csv into `out` (reused when there)."""
    from cbir.eval.slide_parts import write_labels_csv, write_slide_parts
    from cbir.slides.sample import write_sample_slide

    if (out / "labels.csv").is_file():
        return out
    parts = []
    for source, label, rows, cols, per_case in LAYOUT:
        path = (
            write_sample_slide(out / "src" / "ihc.tif") if source == "<sample>" else SHARED / source
        )
        parts += write_slide_parts(path, out, label, rows, cols, per_case)
    write_labels_csv(parts, out / "labels.csv")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="stats-lsh32,effnet-flat")
    parser.add_argument("--methods", default="median,pooled")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cbir-slide-set"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: shared slides not found")
    from cbir.eval.slides import evaluate_slides

    folder = make_set(args.workdir / "parts")
    rows = []
    for recipe in args.recipes.split(","):
        for method in args.methods.split(","):
            r = evaluate_slides(folder, recipe=recipe, method=method, device="cpu")
            m = r.mean
            rows.append(
                {
                    "recipe": recipe,
                    "method": method,
                    "slides": r.slides,
                    "acc@1": round(m.acc_at_1, 3),
                    "acc@3": round(m.acc_at_3, 3),
                    "mv@3": round(m.mv_at_3, 3),
                    "map@5": round(m.map_at_5, 3),
                    "macro_f1": round(m.f1 or 0.0, 3),
                    "all_acc@1": round(r.micro.acc_at_1, 3),
                    "seconds": r.seconds,
                }
            )
            print(json.dumps(rows[-1]) if args.json else rows[-1], flush=True)


if __name__ == "__main__":
    main()
