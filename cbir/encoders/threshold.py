"""`threshold`: learned hash activations in (0, 1) -> bits (activation > 0.5), packed.
Used by deep-hashing descriptors (deephash, ssdh) whose networks learn the bits."""

from __future__ import annotations

import numpy as np

from cbir.encoders.base import pack_bits, register_encoder
from cbir.errors import RecipeError
from cbir.specs import EncoderSpec


class ThresholdEncoder:
    """(n, q) float32 -> (n, ceil(q / 8)) uint8; bit i = x_i > threshold. q not a multiple
    of 8 is padded with zero bits (constant, so Hamming distances are unchanged)."""

    #: Recipe parameters that are promises checked against the weights, not settings that
    #: shape the codes (bundles built before `bits` was stated lack it).
    promises = ("bits",)

    def __init__(self, input_dim: int, threshold: float = 0.5, bits: int | None = None) -> None:
        """`bits`: the code length the recipe promises; weights giving another is an error."""
        if bits is not None and bits != input_dim:
            raise RecipeError(
                f"the recipe's codes are {bits} bits but the weights give {input_dim}-bit "
                f"activations (use the {input_dim}-bit recipe, or train with --bits {bits})"
            )
        self.q = input_dim
        self.threshold = threshold
        padded = -(-input_dim // 8) * 8
        self.spec = EncoderSpec(
            name="threshold",
            input_dim=input_dim,
            bits=padded,
            standardize=False,
            params={"threshold": threshold, "q": input_dim},
        )

    def fit(self, x: np.ndarray) -> None:
        """Nothing to learn: the network learned the bits."""

    def encode(self, x: np.ndarray) -> np.ndarray:
        bits = np.zeros((len(x), self.spec.bits), dtype=bool)
        bits[:, : self.q] = x > self.threshold
        return pack_bits(bits)

    def state(self) -> dict[str, np.ndarray]:
        return {"threshold": np.array([self.threshold], dtype=np.float32)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


@register_encoder("threshold")
def _create_threshold(**params: object) -> ThresholdEncoder:
    return ThresholdEncoder(**params)  # type: ignore[arg-type]


_create_threshold.promises = ThresholdEncoder.promises  # type: ignore[attr-defined]
