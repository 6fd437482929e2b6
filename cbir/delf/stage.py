"""The local-feature stage of a bundle: extractor (registered by name) + collection PCA.

Tiles -> raw local features (extractor) -> PCA + L2 (fitted on the first build) ->
stored rows: one Faiss float index over every descriptor, and per tile in LMDB the
keypoints (level-0 x, y), pyramid scale and attention of each row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from cbir.delf.extract import LOCAL_ID_BITS, DelfExtractor, LocalFeatures
from cbir.delf.pca import FIT_POOL, FIT_SAMPLE, LocalPCA
from cbir.errors import BundleError, CbirError
from cbir.files import load_npz, save_npz
from cbir.recipes import LocalConfig
from cbir.registry import Registry


class LocalExtractor(Protocol):
    dim: int
    spec: dict[str, object]

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """(h, w, 3) uint8 -> local features, keypoints in its pixels."""
        ...

    def extract_batch(self, images: np.ndarray) -> list[LocalFeatures]:
        """(b, h, w, 3) uint8 -> local features of each."""
        ...


LOCAL_EXTRACTORS: Registry[LocalExtractor] = Registry("local feature extractor")


@LOCAL_EXTRACTORS.register("delf")
def _create_delf(**params: object) -> DelfExtractor:
    return DelfExtractor(**params)  # type: ignore[arg-type]


def local_ids(tile_ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Faiss ids of the local rows of tiles: (tile id << LOCAL_ID_BITS) | row, tile by tile.
    tile_ids, counts: (n,) -> (counts.sum(),) int64."""
    if not len(tile_ids):
        return np.zeros(0, np.int64)
    rows = np.concatenate([np.arange(c, dtype=np.int64) for c in counts.tolist()])
    return (np.repeat(tile_ids.astype(np.int64), counts) << LOCAL_ID_BITS) | rows


def split_local_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) local ids -> tile ids (n,), rows (n,)."""
    return ids >> LOCAL_ID_BITS, ids & ((1 << LOCAL_ID_BITS) - 1)


class LocalStage:
    """A recipe's local features: extraction, projection, and the fitted PCA's state."""

    def __init__(
        self, cfg: LocalConfig, weights: Path | None = None, device: str | None = "auto"
    ) -> None:
        self.cfg = cfg
        self.weights = weights
        self.extractor = LOCAL_EXTRACTORS.create(
            cfg.name, **{**cfg.params, "weights": weights, "device": device}
        )
        self.pca = LocalPCA(cfg.pca_dim)
        self._pending: list[LocalFeatures] = []  # raw features waiting for the PCA fit
        self._pending_rows = 0

    @property
    def spec(self) -> dict[str, object]:
        return {**self.extractor.spec, "pca_dim": self.cfg.pca_dim}

    @property
    def fitted(self) -> bool:
        return self.pca.mean is not None

    def extract_tiles(self, tiles: np.ndarray) -> list[LocalFeatures]:
        """(n, t, t, 3) uint8 -> raw features per tile (descriptors float16 to save memory
        until the PCA is fitted; projected at once when it is)."""
        return self.extract_tiles_pooled(tiles, pooled=False)[0]

    def extract_tiles_pooled(
        self, tiles: np.ndarray, pooled: bool = True
    ) -> tuple[list[LocalFeatures], np.ndarray | None]:
        """`extract_tiles` and, from the same forward pass, each tile's global DELF
        descriptor (n, c) float32 when the extractor runs at scale 1 (else None)."""
        feats, g = self.extractor.extract_batch_pooled(tiles, pooled)
        return self._stored(feats), g

    def _stored(self, feats: list[LocalFeatures]) -> list[LocalFeatures]:
        if self.fitted:
            return [self.project(f) for f in feats]
        for f in feats:
            f.descriptors = f.descriptors.astype(np.float16)
        return feats

    def query(self, image: np.ndarray) -> LocalFeatures:
        """(h, w, 3) uint8 -> projected local features of a query image."""
        return self.project(self.extractor.extract(image))

    def project(self, f: LocalFeatures) -> LocalFeatures:
        """Raw (n, c) descriptors -> PCA (n, pca_dim) unit vectors (already projected ones
        pass through)."""
        if f.projected:
            return f
        return LocalFeatures(
            self.pca.transform(f.descriptors), f.xy, f.scales, f.attention, projected=True
        )

    def observe(self, feats: list[LocalFeatures]) -> None:
        """Take newly extracted features (indexing, one thread). Until the PCA is fitted
        they wait here raw; once FIT_POOL rows have come it is fitted on a sample of
        FIT_SAMPLE of them and every waiting feature is projected in place, so a first
        build holds at most about FIT_POOL raw descriptors (plus those of tiles in flight).
        The PCA then comes from the first tiles read (slides in the order given)."""
        if self.fitted:
            for f in feats:
                self._project_in_place(f)
            return
        self._pending += feats
        self._pending_rows += sum(len(f) for f in feats)
        if self._pending_rows >= FIT_POOL:
            self.finish_fit()

    def finish_fit(self, seed: int = 0) -> None:
        """Fit the PCA on the waiting raw descriptors if it is not fitted yet (a seeded
        sample of at most FIT_SAMPLE rows), then project them all in place."""
        if not self.fitted:
            if self._pending_rows == 0:
                raise CbirError("no local features were found in the indexed tiles")
            keep = min(1.0, FIT_SAMPLE / self._pending_rows)
            rng = np.random.default_rng(seed)
            raw = np.concatenate(  # a per-tile sample: no full copy of the pool
                [f.descriptors[rng.random(len(f)) < keep] for f in self._pending if len(f)]
            )
            # fit a new object and swap it in: worker threads may be projecting
            self.pca = LocalPCA(self.cfg.pca_dim).fit(raw.astype(np.float32), seed)
        for f in self._pending:
            self._project_in_place(f)
        self._pending, self._pending_rows = [], 0

    def _project_in_place(self, f: LocalFeatures) -> None:
        if not f.projected:
            f.descriptors = self.pca.transform(f.descriptors)
            f.projected = True

    def save_state(self, path: Path) -> None:
        save_npz(path, self.pca.state())

    def load_state(self, path: Path) -> None:
        state = load_npz(path, "local-feature state")
        try:
            self.pca.load_state(state)
        except (ValueError, KeyError) as exc:
            raise BundleError(f"{path}: unreadable local-feature state ({exc})") from exc
