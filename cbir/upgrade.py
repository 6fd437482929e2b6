"""Converting and refitting whole bundles: `cbir upgrade` (format 2 -> 3, no slide is
read again) and `cbir rebuild` (every live slide described again and the collection
state refitted, labels kept)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from cbir.errors import CbirError
from cbir.progress import Progress
from cbir.storage.compact import merge_into
from cbir.storage.manifest import FORMAT_VERSION, LOCAL_WEIGHTS_FILE, SCALE_FILE, read_manifest
from cbir.storage.writer import leftovers, transaction


class UpgradeReport(BaseModel):
    bundle: str
    from_format: int
    to_format: int
    slides: int
    tiles: int
    seconds: float
    upgraded: bool = True  # False: the bundle was already of this format (nothing done)


def upgrade(bundle: str | os.PathLike[str]) -> UpgradeReport:
    """Convert a format-2 bundle to format 3 in place, atomically: its state files are
    copied, its one generation becomes one segment (grids re-encoded, tile ids, codes,
    vectors, local features and labels kept). A bundle already of this format is left
    as it is (`upgraded` False)."""
    start = time.perf_counter()
    current = read_manifest(Path(bundle))
    if not current.readonly:
        return UpgradeReport(
            bundle=str(bundle),
            from_format=current.format_version,
            to_format=current.format_version,
            slides=current.counts.slides,
            tiles=current.counts.tiles,
            seconds=round(time.perf_counter() - start, 4),
            upgraded=False,
        )
    with transaction(bundle, create=False, upgrade=True) as writer:
        live, previous = writer.live, writer.previous
        assert live is not None and previous is not None
        if not previous.readonly:
            raise CbirError(f"{bundle}: already bundle format {previous.format_version}")
        records = live.meta.slide_list()
        writer.labels = {r.slide_id: r.labels for r in records if r.labels}
        writer.next_slide_id = max((r.slide_id for r in records), default=0) + 1
        merge_into(writer, live.segments)
        manifest = writer.commit(previous.recipe)
    return UpgradeReport(
        bundle=str(bundle),
        from_format=previous.format_version,
        to_format=FORMAT_VERSION,
        slides=manifest.counts.slides,
        tiles=manifest.counts.tiles,
        seconds=round(time.perf_counter() - start, 4),
    )


def rebuild(
    bundle: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    device: str | None = "auto",
    skip_errors: bool = False,
) -> object:
    """Index every live slide of a bundle again with its recipe and weights, refitting
    the collection state (standardisation, hyperplanes, PCA, IVF quantizer) on all of
    them; labels are kept. Atomic: the old bundle stays live until the new one is
    published. Returns the build's IndexReport."""
    from cbir.api import open_index
    from cbir.indexer import build_index

    root = Path(bundle)
    manifest = read_manifest(root)
    if manifest.readonly:
        raise CbirError(f"{root}: convert it first with `cbir upgrade {root}`")
    leftovers(root, manifest)  # refused when the manifest is older than the bundle's data
    with open_index(root, device="cpu") as ix:
        records = ix.bundle.meta.slide_list()
        paths = [r.info.path for r in records]
        labels = {r.info.path: r.labels for r in records if r.labels}
        per_slide = {  # each slide is described again with the settings it was indexed with
            r.info.path: (
                r.info.base_magnification if r.info.magnification_source == "given" else None,
                r.min_tissue_fraction,
            )
            for r in records
        }
        state = ix.bundle.state
        weights = ix.bundle.pipeline.weights
        local = manifest.local
    with tempfile.TemporaryDirectory(prefix="cbir-rebuild-") as tmp:
        # The weights are copied out: the build sweeps the old state once it publishes.
        kept: dict[str, Path | None] = {}
        for key, path in (
            ("weights", weights),
            ("scale", state / SCALE_FILE if manifest.scale_weights_sha256 else None),
            (
                "local",
                state / local.weights_file
                if local is not None and local.weights_file == LOCAL_WEIGHTS_FILE
                else None,
            ),
        ):
            kept[key] = None
            if path is not None:
                kept[key] = Path(tmp) / f"{key}.pt"
                shutil.copyfile(path, kept[key])
        local_weights = kept["local"]
        if local is not None and local_weights is None and local.weights_file is not None:
            local_weights = kept["weights"]  # shared with the descriptor
        return build_index(
            paths,
            root,
            manifest.recipe,
            overwrite=True,
            progress=progress,
            weights=kept["weights"],
            device=device,
            scale_weights=kept["scale"],
            local_weights=local_weights,
            skip_errors=skip_errors,
            labels=labels,
            per_slide=per_slide,
        )
