"""`lsh` (seeds 000, 004): k random hyperplanes through the origin of standardised features."""

from __future__ import annotations

import numpy as np

from cbir.encoders.base import pack_bits, register_encoder, standardization
from cbir.errors import BundleError
from cbir.specs import EncoderSpec


class LshEncoder:
    """Bit i is 0 when the standardised vector lies above hyperplane i (w_i . x > 0), else 1.

    `fit` learns the per-feature mean and standard deviation of the collection
    (standardisation); the hyperplanes come from `seed`. Both are stored in the bundle.
    """

    def __init__(self, input_dim: int, bits: int = 32, seed: int = 0, standardize: bool = True):
        if bits <= 0 or bits % 8:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        self.spec = EncoderSpec(
            name="lsh",
            input_dim=input_dim,
            bits=bits,
            standardize=standardize,
            params={"seed": seed},
        )
        rng = np.random.default_rng(seed)
        self.hyperplanes = rng.standard_normal((bits, input_dim)).astype(np.float32)
        self.mean = np.zeros(input_dim, dtype=np.float32)
        self.scale = np.ones(input_dim, dtype=np.float32)
        self.fitted = not standardize

    def fit(self, x: np.ndarray) -> None:
        if self.spec.standardize:
            self.mean, self.scale = standardization(x)
        self.fitted = True

    def encode(self, x: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError("lsh encoder used before fit() or load_state()")
        z = (x.astype(np.float32) - self.mean) / self.scale
        above = z @ self.hyperplanes.T > 0
        return pack_bits(~above)

    def state(self) -> dict[str, np.ndarray]:
        return {"hyperplanes": self.hyperplanes, "mean": self.mean, "scale": self.scale}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        expected = {"hyperplanes": self.hyperplanes.shape, "mean": self.mean.shape}
        for key, shape in expected.items():
            if key not in state or state[key].shape != shape:
                raise BundleError(f"lsh state: {key} missing or of wrong shape")
        if not np.array_equal(state["hyperplanes"], self.hyperplanes):
            raise BundleError("lsh state: stored hyperplanes differ from those of the seed")
        self.mean = state["mean"].astype(np.float32)
        self.scale = state["scale"].astype(np.float32)
        self.fitted = True


@register_encoder("lsh")
def _create_lsh(**params: object) -> LshEncoder:
    return LshEncoder(**params)  # type: ignore[arg-type]
