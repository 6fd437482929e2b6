#!/usr/bin/env python
"""LSH vs deep hashing (seed 001) vs SSDH (seed 004) at several code lengths, tiles-crc9.

    python tools/eval_hash_bits.py --json [--bits 12,24,32,48,64,128] [--backbone small]

The same as `cbir evaluate --tiles DIR --bits-sweep 12,24,...` (see cbir/eval/bits_sweep.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cbir.eval.bits_sweep import bits_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/tiles-crc9"))
    parser.add_argument("--bits", default="12,24,32,48,64,128")
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--backbone-weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"eval_hash_bits: {args.data} not found", file=sys.stderr)
        raise SystemExit(2)
    out = bits_sweep(
        args.data,
        [int(b) for b in args.bits.split(",")],
        args.backbone,
        args.backbone_weights,
        args.device,
    )
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
