"""How tests/data/bundle-delf-v3 was written: by the cbir of commit 89386c3, before
compact local features (float32 keypoints and float16 descriptors in LMDB, a Flat float
local index), with its search results. Kept for the record; rerunning it with a later
cbir writes that cbir's layout instead.

    python tests/data/make_bundle_delf_v3.py tests/data
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

import cbir
from cbir.indexer import build_index
from cbir.search.verified import verify_hits
from cbir.slides.sample import sample_image, write_pyramidal_tiff

RECIPE = """name = "delf-fixture"
[tiling]
tile_size = 448
magnifications = [20]
[descriptor]
name = "delf"
params = { trunk = "small-dense" }
[encoder]
name = "float"
[index]
float_factory = "Flat"
[search]
k = 5
verify = true
[local]
params = { trunk = "small-dense", scales = [0.5, 0.7071, 1.0, 1.4142], max_features = 40 }
float_factory = "Flat"
candidates_from = "votes"
"""
QUERY = (300, 748, 200, 648)  # y0, y1, x0, x1 in the sample image shrunk to 20x


def query_image() -> np.ndarray:
    img = sample_image()
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    y0, y1, x0, x1 = QUERY
    return np.ascontiguousarray(half[y0:y1, x0:x1])


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        slide = write_pyramidal_tiff(Path(tmp) / "generated.tif", sample_image(), mpp=0.25)
        recipe = Path(tmp) / "r.toml"
        recipe.write_text(RECIPE)
        root = out / "bundle-delf-v3"
        shutil.rmtree(root, ignore_errors=True)
        build_index([slide], root, recipe, device="cpu")
    (root / ".lock").unlink(missing_ok=True)
    q = query_image()
    res: dict[str, list] = {}
    with cbir.open_index(root, device="cpu") as ix:
        for name, verify in (("votes", True), ("global", False)):
            res[name] = [
                [h.slide, h.magnification, h.x, h.y, h.w, h.h, h.inliers, h.affine]
                for h in ix.search(q, k=3, verify=verify).hits
            ]
        coarse = ix.search(q, k=4, verify=False).hits
        hits = verify_hits(ix.collection, ix.bundle.local.query(q), coarse, 4)
        res["verified_coarse"] = [[h.x, h.y, h.inliers, h.matches, h.affine] for h in hits]
    expected = {"query": list(QUERY), "hits": res}
    (out / "bundle-delf-v3-expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
