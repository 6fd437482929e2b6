"""Storing a grid's local features in a segment: level-0 keypoints in LMDB by tile id,
descriptors staged for the segment's local index (cbir.storage.artifacts.LocalFeatures)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cbir.delf.stage import LocalStage
    from cbir.describe import DescribedScale
    from cbir.index.local import LocalCodeIndex
    from cbir.storage.state import SegmentStage


def store_locals(
    txn: object,
    seg: SegmentStage,
    local: LocalStage,
    scale: DescribedScale,
    tile_ids: np.ndarray,
    codec: LocalCodeIndex | None = None,
) -> None:
    """Project a grid's local features, store their level-0 keypoints in LMDB and stage
    their descriptors for the segment's local index (their only stored copy): as codes
    of `codec` (the collection's trained local index, 21 B a row instead of 160) when
    there is one, as float32 rows while a first build has yet to train it."""
    from cbir.delf.stage import local_ids

    assert scale.locals is not None and seg.meta is not None
    g = scale.geometry
    rr, cc = np.nonzero(scale.keep)
    xs, ys = g.origin(rr, cc)
    per_px = g.level0_per_px  # level-0 pixels per tile pixel
    counts, vectors = [], []
    for tid, x0, y0, f in zip(
        tile_ids.tolist(), xs.tolist(), ys.tolist(), scale.locals, strict=True
    ):
        f = local.project(f)
        points = np.column_stack(
            [x0 + f.xy[:, 0] * per_px, y0 + f.xy[:, 1] * per_px, f.scales, f.attention]
        ).astype(np.float32)
        seg.meta.put_locals(txn, tid, points)  # type: ignore[arg-type]
        vectors.append(f.descriptors)
        counts.append(len(f))
    if vectors:
        ids = local_ids(tile_ids, np.asarray(counts, np.int64))
        x = np.concatenate(vectors)
        seg.stage_rows("locals", codec.encode(x) if codec is not None else x, ids)
