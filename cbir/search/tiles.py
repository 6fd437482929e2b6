"""Tile queries: the top k stored tiles for one query code, by the index's distance or
in two steps (Hamming, then squared L2 on stored descriptors), with query expansion and
magnification / slide filters applied before the top k."""

from __future__ import annotations

import numpy as np

from cbir.errors import QueryError
from cbir.search.collection import Collection
from cbir.search.expansion import expand_query
from cbir.search.hits import Hit
from cbir.storage.vector_rows import rows_of

#: The coarse step of a two-step search keeps codes tied with its K-th, up to K times this.
RERANK_TIE_WIDEN = 8


def reranks(col: Collection, x: np.ndarray | None) -> bool:
    """Whether a tile search is two-step (Hamming, then L2 on stored descriptors)."""
    return bool(col.recipe.search.rerank and col.bundle.pipeline.binary and x is not None)


def reranks_codes(col: Collection) -> bool:
    """Whether a float search is two-step: compressed codes (IVF-PQ) for candidates,
    then squared L2 on the stored float vectors (`rerank_codes`)."""
    return bool(
        col.recipe.search.rerank
        and not col.bundle.pipeline.binary
        and getattr(col.bundle.index, "approximate", False)
    )


def stored_codes(col: Collection, tile_ids: np.ndarray) -> np.ndarray:
    """(n,) tile ids -> (n, e) their codes as stored in the grids (float vectors of a
    float recipe, exact); NaN rows for ids without a record. Float16 grids' vectors come
    from the segments' row files when they have them (the same numbers, read at once)."""
    spec = col.bundle.pipeline.encoder.spec
    if col.bundle.rows and spec.code_dtype == "float16":
        out = rows_of(col.bundle.rows, tile_ids, spec.dim)
        missing = np.isnan(out[:, 0])
        if missing.any():
            out[missing] = _grid_codes(col, np.asarray(tile_ids)[missing])
        return out
    return _grid_codes(col, tile_ids)


def _grid_codes(col: Collection, tile_ids: np.ndarray) -> np.ndarray:
    raw = col.bundle.meta.codes_of(tile_ids)
    size = next((len(r) for r in raw if r is not None), 0)
    if not size:
        return np.full((len(raw), 1), np.nan, np.float32)
    blank = b"\xff" * size  # float32 NaN bytes: a missing tile sorts last
    packed = np.frombuffer(b"".join(r if r is not None else blank for r in raw), np.uint8)
    return col.bundle.pipeline.codes_from_bytes(packed.reshape(len(raw), size))


def rerank_codes(
    col: Collection, xq: np.ndarray, k: int, coarse_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`coarse_k` by the compressed index, ordered by squared L2 between the query
    code xq (1, e) and their stored vectors (float16 copies of the codes in the segments'
    mapped row files, read at once). D (m,) float32, I (m,), m <= k, ties by id."""
    D, I = col.bundle.index.search(xq, coarse_k)
    I = I[0][I[0] >= 0]
    if not len(I):
        return D[0][:0], I
    stored = rows_of(col.bundle.rows, I, xq.shape[1])
    missing = np.isnan(stored[:, 0])
    if missing.any():  # segments written before the row files: their LMDB copies
        stored[missing] = col.bundle.meta.vectors_of(I[missing], xq.shape[1])
        missing = np.isnan(stored[:, 0])
    if missing.any():  # written before any copies: from the grids
        stored[missing] = _grid_codes(col, I[missing])
    D, I = nearest_stored(stored, xq, I, k)
    return D.astype(np.float32), I


def nearest_stored(
    stored: np.ndarray, target: np.ndarray, I: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k of candidates I (m,) whose stored vectors (m, d) are nearest `target`
    (1, d) by squared L2 (float64; a NaN row, a tile without a vector, goes last), ties
    by id: D (k',) float64, I (k',)."""
    D = ((stored.astype(np.float64) - target.astype(np.float64)) ** 2).sum(axis=1)
    D = np.where(np.isnan(D), np.inf, D)
    order = np.lexsort((I, D))[:k]
    return D[order], I[order]


def rerank(
    col: Collection, xq: np.ndarray, x: np.ndarray, k: int, coarse_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse top-`coarse_k` by Hamming (plus codes tied with the last, up to
    RERANK_TIE_WIDEN x), fine order by squared L2 on the stored descriptors.
    Returns D (m,) float64 squared L2, I (m,) int64, m <= k, ties by id."""
    index = col.bundle.index
    ntotal = index.ntotal
    D, I = index.search(xq, coarse_k)
    D, I = D[0][I[0] >= 0], I[0][I[0] >= 0]
    if len(I) == coarse_k < ntotal:  # keep every code tied with the K-th (short codes tie)
        D2, I2 = index.search(xq, min(ntotal, coarse_k * RERANK_TIE_WIDEN))
        keep = (D2[0] <= D[-1]) & (I2[0] >= 0)
        I = I2[0][keep]
    return nearest_stored(col.bundle.meta.vectors_of(I, x.shape[1]), x, I, k)


def expanded(col: Collection, xq: np.ndarray, expand: int) -> np.ndarray:
    """alpha-QE of a float query (1, d) with its `expand` nearest stored vectors."""
    if col.code_similarity.kind != "unit_l2":
        raise QueryError(
            f"{col.bundle.root}: query expansion needs unit float vectors "
            f"(recipe {col.recipe.name!r} does not normalise them)"
        )
    _, I = col.bundle.index.search_tie_ordered(xq, expand)
    if not len(I):
        return xq
    return expand_query(xq[0], stored_codes(col, I), col.recipe.search.expand_alpha)[None]


def _ranked(
    col: Collection, xq: np.ndarray, k: int, x: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if reranks(col, x):
        assert x is not None and col.recipe.search.rerank
        return rerank(col, xq, x, k, max(col.recipe.search.rerank, k))
    if reranks_codes(col):
        assert col.recipe.search.rerank
        return rerank_codes(col, xq, k, max(col.recipe.search.rerank, k))
    return col.bundle.index.search_tie_ordered(xq, k)


def tile_hits(
    col: Collection,
    xq: np.ndarray,
    k: int,
    x: np.ndarray | None = None,
    allowed: set[float] | None = None,
    expand: int = 0,
    slide_ids: set[int] | None = None,
) -> list[Hit]:
    """Top-k tiles for one query code (1, e), ties by tile id: by Hamming (binary), by
    squared L2 (float), or coarse top-`rerank` by Hamming then squared L2 between the
    descriptor `x` (1, d) and the stored descriptors (two-step recipes). With `allowed`
    magnifications or `slide_ids` the search widens until k of theirs are found."""
    ntotal = col.bundle.index.ntotal
    if ntotal == 0:
        return []
    if expand and not col.bundle.pipeline.binary:
        xq = expanded(col, xq, expand)
    share = len(allowed) / max(1, len(col.magnifications)) if allowed else 1.0
    if slide_ids is not None:
        share *= sum(col.slides[s].tiles for s in slide_ids) / max(1, ntotal)
    filtered = allowed is not None or slide_ids is not None
    want = k if not filtered else int(np.ceil(2 * k / max(share, 1e-9)))
    while True:
        D, I = _ranked(col, xq, want, x)
        records = col.bundle.meta.tiles_of(I)
        if not filtered:
            break
        keep = [
            i
            for i, r in enumerate(records)
            if (allowed is None or r.magnification in allowed)
            and (slide_ids is None or r.slide_id in slide_ids)
        ]
        if len(keep) >= k or want >= ntotal or len(I) < want:
            D, I, records = D[keep], I[keep], [records[i] for i in keep]
            break
        want *= 4
    similarity = col.vector_similarity if reranks(col, x) else col.code_similarity
    return [
        col.hit(
            rank,
            rec.slide_id,
            rec.magnification,
            (rec.x, rec.y, rec.w, rec.h),
            (rec.row, rec.col),
            (1, 1),
            round(float(dist), 6),
            similarity(float(dist)),
            tile_id=tid,
        )
        for rank, (dist, rec, tid) in enumerate(
            zip(D[:k].tolist(), records[:k], I[:k].tolist(), strict=True), 1
        )
    ]
