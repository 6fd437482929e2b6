"""A slide query made ready to rank (cbir.search.slide_rank): an indexed slide (named by
path, file name, or a file with the same content) brings its stored mosaic and codes,
read from the bundle; any other slide file is planned as for indexing (tissue, mosaic),
and only its mosaic tiles are read and described."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cbir.errors import EmptyTissueError, QueryError
from cbir.search.collection import Collection
from cbir.search.filters import own_slide_ids
from cbir.search.slide_rank import QueryMosaic, mosaic_codes, stored_mosaic
from cbir.storage.mosaics import pooled_vector


def resolve_query_slide(col: Collection, slide: str | int) -> int | Path:
    """The indexed slide id that `slide` names (its id, its path, its unique file name, or
    a file with its content), else the path of a slide file or folder to read."""
    if isinstance(slide, int):
        if slide not in col.slides:
            raise QueryError(f"no slide {slide} in {col.bundle.root}")
        return slide
    from cbir.storage.slide_names import lookup_slide

    records = list(col.slides.values())
    record = lookup_slide(records, slide, col.bundle.root, error=QueryError, files=True)
    if record is not None:
        return record.slide_id
    ids = own_slide_ids(col, slide)  # a copy of an indexed slide: the same checksum
    return min(ids) if ids else Path(slide)


def indexed_query(col: Collection, slide_id: int) -> QueryMosaic:
    """The query of an indexed slide: its stored mosaic's codes, nothing read again."""
    info = col.slides[slide_id].info
    mosaic = stored_mosaic(col, slide_id)
    if mosaic is None:
        raise QueryError(f"{info.name}: the slide has no indexed tile to query with")
    codes, _ = mosaic_codes(col, mosaic)
    records = col.bundle.meta.tiles_of(mosaic.tile_ids)
    return QueryMosaic(
        name=info.name,
        magnification=mosaic.magnification,
        codes=codes,
        rects=[(r.x, r.y, r.w, r.h) for r in records if r is not None],
        pooled=mosaic.pooled,
        slide_id=slide_id,
    )


def file_query(col: Collection, path: Path, min_tissue: float) -> QueryMosaic:
    """The query of a slide file that is not indexed: planned with the bundle's recipe
    (its tissue tiles and mosaic), its mosaic tiles read and described (a few dozen,
    whatever the slide's size). Raises the planning's errors (unreadable, no tissue)."""
    from cbir.describe import plan_slide
    from cbir.slides import open_slide

    try:
        plan = plan_slide(path, col.recipe, min_tissue_fraction=min_tissue)
    except EmptyTissueError as exc:  # in a query's words: nothing is indexed here
        reason = str(exc).split(": ", 1)[-1].split("; nothing to index")[0]
        raise QueryError(f"{path}: {reason}; no tissue to query with") from None
    mosaic = plan.mosaic
    assert mosaic is not None  # planning refuses a slide without tissue
    scale = next(i for i, g in enumerate(plan.grids) if g.magnification == mosaic.magnification)
    grid, t = plan.grids[scale], col.recipe.tiling.tile_size
    rr, cc = np.nonzero(plan.keeps[scale])
    xs, ys = grid.origin(rr[mosaic.cells], cc[mosaic.cells])
    tiles = np.empty((len(xs), t, t, 3), np.uint8)
    with open_slide(path, plan.base_magnification) as slide:
        for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True)):
            tile = slide.read_region(x, y, grid.size, grid.size, grid.magnification)
            tiles[i] = tile if tile.shape[:2] == (t, t) else cv2.resize(tile, (t, t))
    pipe = col.bundle.pipeline
    codes = pipe.encode(pipe.describe(tiles))
    return QueryMosaic(
        name=str(path),
        magnification=grid.magnification,
        codes=codes,
        rects=[(x, y, grid.size, grid.size) for x, y in zip(xs.tolist(), ys.tolist(), strict=True)],
        pooled=pooled_vector(codes, pipe.binary),
    )
