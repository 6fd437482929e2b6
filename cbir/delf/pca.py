"""PCA of local descriptors (scikit-learn), fitted on the indexed collection, then L2
normalisation: (n, c) -> (n, dim) unit vectors (DELF: 1024 -> 40)."""

from __future__ import annotations

import numpy as np

#: Descriptors sampled (seeded) to fit the PCA; more add time, not accuracy.
FIT_SAMPLE = 100_000
#: A first build fits the PCA once this many raw descriptors have come (about 1 GB as
#: float16 at 1024-d, ~500 tiles of 1000 features), sampling FIT_SAMPLE of them; smaller
#: collections are fitted on all of theirs at the end.
FIT_POOL = 500_000


class LocalPCA:
    def __init__(self, dim: int = 40) -> None:
        if dim < 1:
            raise ValueError(f"PCA dim must be >= 1, got {dim}")
        self.dim = dim
        self.mean: np.ndarray | None = None  # (c,)
        self.components: np.ndarray | None = None  # (dim, c); zero rows past the rank

    def fit(self, x: np.ndarray, seed: int = 0) -> LocalPCA:
        """Fit on (n, c) descriptors (a seeded sample of at most FIT_SAMPLE rows)."""
        from sklearn.decomposition import PCA  # only a first build with local features fits

        if len(x) > FIT_SAMPLE:
            x = x[np.random.default_rng(seed).choice(len(x), FIT_SAMPLE, replace=False)]
        n_comp = min(self.dim, len(x), x.shape[1])
        if n_comp < 1:
            raise ValueError("no local descriptors to fit the PCA on")
        pca = PCA(n_components=n_comp, random_state=seed).fit(x.astype(np.float64))
        comps = np.zeros((self.dim, x.shape[1]), np.float32)
        comps[:n_comp] = pca.components_
        self.mean = pca.mean_.astype(np.float32)
        self.components = comps
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, c) -> (n, dim) float32, L2-normalised (a zero row stays zero)."""
        if self.mean is None or self.components is None:
            raise RuntimeError("LocalPCA is not fitted")
        y = (x.astype(np.float32) - self.mean) @ self.components.T
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norm, 1e-12)).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        assert self.mean is not None and self.components is not None
        return {"pca_mean": self.mean, "pca_components": self.components}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        comps = state["pca_components"]
        if comps.shape[0] != self.dim:
            raise ValueError(f"stored PCA has {comps.shape[0]} components, recipe wants {self.dim}")
        self.mean = state["pca_mean"].astype(np.float32)
        self.components = comps.astype(np.float32)
