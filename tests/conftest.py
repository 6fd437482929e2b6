"""Shared fixtures: real data location, a generated pyramidal slide, built bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.slides.sample import sample_image, write_pyramidal_tiff

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WSI = SHARED_DATA / "wsi"
CMU = WSI / "cmu-1-small-region.svs"
TCGA = WSI / "tcga-cr-7395-01a-01-ts1.svs"
KIDNEY = WSI / "kidney-48-5.tif"

needs_shared_data = pytest.mark.skipif(
    not (CMU.is_file() and TCGA.is_file() and KIDNEY.is_file()),
    reason=f"real slides not found in {WSI} (a fresh clone has no ../shared/data)",
)


@pytest.fixture(scope="session")
def generated_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-level tiled pyramidal TIFF at 0.25 um/px (40x) from the IHC sample image."""
    path = tmp_path_factory.mktemp("slides") / "generated.tif"
    return write_pyramidal_tiff(path, sample_image(), mpp=0.25)


@pytest.fixture(scope="session")
def second_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another pyramidal TIFF (the sample rotated by 90 degrees, 0.5 um/px = 20x)."""
    path = tmp_path_factory.mktemp("slides2") / "second.tif"
    return write_pyramidal_tiff(path, np.ascontiguousarray(np.rot90(sample_image())), mpp=0.5)


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under `root` (not .lock)."""
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".lock" and p.name != "lock.mdb":
            digest.update(str(p.relative_to(root)).encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def write_two_classes(root: Path, n: int = 8, size: int = 64) -> Path:
    """Class "pink": smooth pink noise; class "dark": dark purple stripes."""
    rng = np.random.default_rng(0)
    for cls in ("pink", "dark"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            if cls == "pink":
                img = rng.normal((225, 160, 200), 8, (size, size, 3))
            else:
                stripes = np.arange(size)[:, None, None] // 3 % 2 * 60
                img = rng.normal((90, 40, 110), 8, (size, size, 3)) + stripes
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root
