"""`float`: descriptors kept as float vectors (optionally standardised, L2-normalised),
for float indexes compared by squared L2 (e.g. the VAE's mu, as DESIGN.md asks)."""

from __future__ import annotations

import numpy as np

from cbir.encoders.base import register_encoder, standardization
from cbir.errors import BundleError
from cbir.specs import EncoderSpec


class FloatEncoder:
    """(n, d) float32 -> (n, d) float32: (x - mean) / scale when `standardize`; with
    `blocks` (dims summing to d, e.g. a multi-layer descriptor's layers) each block is then
    L2-normalised and divided by sqrt(len(blocks)), so no layer outweighs the others; then
    divided by its L2 norm when `normalize`."""

    def __init__(
        self,
        input_dim: int,
        standardize: bool = False,
        normalize: bool = False,
        blocks: list[int] | None = None,
        store: str = "float32",
    ):
        if store not in ("float32", "float16"):
            raise ValueError(f"store {store!r}; valid: float32, float16")
        if blocks is not None and (sum(blocks) != input_dim or min(blocks) < 1):
            raise ValueError(f"blocks {blocks} do not add up to the descriptor's {input_dim} dims")
        params: dict[str, object] = {"normalize": normalize}
        if blocks is not None:
            params["blocks"] = list(blocks)
        self.spec = EncoderSpec(
            name="float",
            kind="float",
            input_dim=input_dim,
            bits=0,
            dim=input_dim,
            standardize=standardize,
            params=params,
            code_dtype=store,  # type: ignore[arg-type]
        )
        self.normalize = normalize
        self.bounds = np.cumsum([0, *blocks]) if blocks else None
        self.mean = np.zeros(input_dim, dtype=np.float32)
        self.scale = np.ones(input_dim, dtype=np.float32)

    def fit(self, x: np.ndarray) -> None:
        if self.spec.standardize:
            self.mean, self.scale = standardization(x)

    def encode(self, x: np.ndarray) -> np.ndarray:
        z = (x.astype(np.float32) - self.mean) / self.scale
        if self.bounds is not None:
            for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True):
                z[:, a:b] /= np.maximum(np.linalg.norm(z[:, a:b], axis=1, keepdims=True), 1e-12)
            z /= np.sqrt(len(self.bounds) - 1)
        if self.normalize:
            z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        if self.spec.code_dtype == "float16":
            z = z.astype(np.float16)
        return np.ascontiguousarray(z, dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for key in ("mean", "scale"):
            if key not in state or state[key].shape != self.mean.shape:
                raise BundleError(f"float encoder state: {key} missing or of wrong shape")
        self.mean = state["mean"].astype(np.float32)
        self.scale = state["scale"].astype(np.float32)


@register_encoder("float")
def _create_float(**params: object) -> FloatEncoder:
    return FloatEncoder(**params)  # type: ignore[arg-type]
