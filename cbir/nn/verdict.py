"""Did a training run learn? Every `cbir train` ends with a verdict from its held-out
accuracy against chance, its loss change and, for hashing, its bits. The verdict is kept
in the weights file's spec; loading weights that did not learn warns."""

from __future__ import annotations

import logging

from pydantic import BaseModel

log = logging.getLogger("cbir")

#: Held-out accuracy must beat chance by this much (absolute) to count as learned.
MIN_ACCURACY_GAIN = 0.10
#: The loss must fall by at least this fraction of its first value.
MIN_LOSS_DROP = 0.05
#: Codes with more constant bits than this fraction, or a mean bit balance above
#: MAX_BIT_BALANCE (0 ideal, 0.5 constant), carry little information.
MAX_CONSTANT_BITS = 0.25
MAX_BIT_BALANCE = 0.4
#: Bit statistics of fewer codes than this say little (a bit is constant by chance).
MIN_BIT_SAMPLES = 10


class Verdict(BaseModel):
    learned: bool
    reasons: list[str] = []  # why not, one phrase each

    @property
    def line(self) -> str:
        return "learned" if self.learned else "DID NOT LEARN: " + "; ".join(self.reasons)


def judge(
    first_loss: float,
    last_loss: float,
    accuracy: float | None = None,
    chance: float | None = None,
    bits: dict[str, float] | None = None,
    n_bits: int | None = None,
    bits_samples: int = MIN_BIT_SAMPLES,
) -> Verdict:
    """A verdict from a run's first and last loss, held-out accuracy vs `chance` (e.g.
    1 / classes), and bit statistics of `bits_samples` codes (cbir.encoders.bits.bit_statistics)."""
    reasons = []
    if (
        accuracy is not None
        and chance is not None
        and chance < 1.0  # one class: nothing to tell apart
        and accuracy < chance + MIN_ACCURACY_GAIN
    ):
        reasons.append(f"held-out accuracy {accuracy:.2f} is at chance ({chance:.2f})")
    drop = (first_loss - last_loss) / abs(first_loss) if first_loss else 0.0
    if first_loss and drop < MIN_LOSS_DROP:  # a first loss of 0 had nothing to learn
        reasons.append(f"loss barely moved ({first_loss:.3g} -> {last_loss:.3g})")
    if bits is not None and bits_samples >= MIN_BIT_SAMPLES:
        constant = bits.get("constant_bits", 0.0)
        if n_bits and constant > MAX_CONSTANT_BITS * n_bits:
            reasons.append(f"{constant:.0f} of {n_bits} bits are constant")
        if bits.get("bit_balance", 0.0) > MAX_BIT_BALANCE:
            reasons.append(f"bits are unbalanced (balance {bits['bit_balance']:.2f})")
    return Verdict(learned=not reasons, reasons=reasons)


def warn_if_not_learned(path: str, spec: dict[str, object]) -> None:
    """Log a warning for weights whose training verdict says they did not learn."""
    verdict = spec.get("verdict")
    if isinstance(verdict, dict) and verdict.get("learned") is False:
        reasons = "; ".join(str(r) for r in verdict.get("reasons", []))
        log.warning("%s: its training did not learn (%s); results will be poor", path, reasons)
