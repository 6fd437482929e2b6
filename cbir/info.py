"""What `cbir info` shows of an opened bundle."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel

from cbir.search.collection import Collection


class SlideEntry(BaseModel):
    slide_id: int
    name: str
    path: str
    base_magnification: float
    magnification_source: str
    magnifications: list[float]
    tiles: int
    added: str
    labels: dict[str, str] = {}


class IndexInfo(BaseModel):
    """What `cbir info` shows."""

    path: str
    format_version: int
    recipe: str
    descriptor: str
    encoder: str
    bits: int
    index_kind: str
    nlist: int | None
    nprobe: int
    generation: int
    segments: int = 1  # immutable parts of the bundle (`cbir compact` merges them)
    removed_tiles: int = 0  # tombstoned tiles still on disk (`cbir compact` drops them)
    slides: list[SlideEntry]
    tiles: int
    bytes_on_disk: int
    # binary recipes: over the indexed codes ("codes": how many; whole slides, at most
    # about BIT_STATISTICS_CODES)
    bit_statistics: dict[str, float] | None = None
    local_features: int | None = None  # rows of the local-feature index (--verify)
    created: str
    updated: str


#: Codes `cbir info` computes bit statistics on, at most (whole slides, spread evenly).
BIT_STATISTICS_CODES = 1_000_000


def sampled_codes(col: Collection, most: int = BIT_STATISTICS_CODES) -> np.ndarray:
    """(n, bytes) uint8 codes of whole slides taken evenly over the slide ids until about
    `most` rows (every slide when the bundle is that small): a 1e8-tile bundle's
    statistics read 1e6 codes, not 1e8 (12 GB unpacked)."""
    sids = sorted(col.slides)
    per_slide = max(1, col.bundle.manifest.counts.tiles // max(1, len(sids)))
    step = max(1, math.ceil(len(sids) * per_slide / most))  # up: the newest slides too
    parts, n = [], 0
    for sid in sids[::step]:
        for g in col.bundle.meta.grids_of(sid):
            parts.append(g.codes[g.valid])
            n += len(parts[-1])
        if n >= most:
            break
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.uint8)


def bundle_info(col: Collection) -> IndexInfo:
    """Counts, components, size on disk and (binary recipes) bit statistics."""
    from cbir.encoders.bits import bit_statistics  # (cbir.eval imports the eval harness)

    bundle = col.bundle
    man, root = bundle.manifest, bundle.root
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    stats = None
    if bundle.pipeline.binary and man.counts.tiles:
        codes = sampled_codes(col)
        q = int(man.encoder.params.get("q", man.encoder.bits))  # without byte padding
        bits = np.unpackbits(codes, axis=1, bitorder="little")[:, :q].astype(bool)
        stats = {**bit_statistics(bits), "codes": float(len(codes))}
    return IndexInfo(
        path=str(root),
        format_version=man.format_version,
        recipe=man.recipe.name,
        descriptor=man.descriptor.name,
        encoder=man.encoder.name,
        bits=man.encoder.bits,
        index_kind=man.index_kind,
        nlist=man.nlist,
        nprobe=bundle.index.nprobe,
        generation=man.generation,
        segments=len(bundle.segments),
        removed_tiles=sum(s.entry.dead_tiles for s in bundle.segments),
        tiles=man.counts.tiles,
        bytes_on_disk=size,
        bit_statistics=stats,
        local_features=man.local.features if man.local else None,
        created=man.created,
        updated=man.updated,
        slides=[SlideEntry.model_validate(r.flat()) for r in col.slides.values()],
    )
