"""The index stage: a binary (Hamming) or float (L2) Faiss index chosen by the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbir.index.binary import BinaryTileIndex
from cbir.index.float import FloatTileIndex
from cbir.recipes import IndexConfig
from cbir.specs import EncoderSpec

TileIndex = BinaryTileIndex | FloatTileIndex


def build_tile_index(
    spec: EncoderSpec, cfg: IndexConfig, xb: np.ndarray, ids: np.ndarray
) -> TileIndex:
    """An index holding codes `xb` (binary (n, bits / 8) uint8 or float (n, dim) float32)."""
    if spec.kind == "binary":
        return BinaryTileIndex.for_collection(spec.bits, cfg, xb, ids)
    return FloatTileIndex.for_collection(spec.dim, cfg, xb, ids)


def load_tile_index(path: Path, kind: str, cfg: IndexConfig, mmap: bool = False) -> TileIndex:
    """Read an index file written by `save`; `kind` is the manifest's index_kind.
    `mmap`: map the file's large arrays (codes, inverted lists) instead of reading them
    (read-only use: a segment's index, never added to or removed from)."""
    if kind == "float":
        return FloatTileIndex.load(path, cfg, mmap)
    return BinaryTileIndex.load(path, cfg.nprobe, mmap)


def tile_index_from_bytes(data: np.ndarray, kind: str, cfg: IndexConfig) -> TileIndex:
    """An index serialised by `to_bytes`; `kind` is the manifest's index_kind."""
    if kind == "float":
        return FloatTileIndex.from_bytes(data, cfg)
    return BinaryTileIndex.from_bytes(data, cfg.nprobe)
