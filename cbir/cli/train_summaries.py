"""The one-line summary each `cbir train <method>` prints for its report."""

from __future__ import annotations

from typing import Any


def cnn(report: Any) -> str:
    acc = "n/a" if report.holdout_accuracy is None else f"{report.holdout_accuracy:.3f}"
    return (
        f"wrote {report.weights} ({report.train_tiles} training tiles, "
        f"{len(report.classes)} classes, loss {report.first_epoch_loss:.3f} -> "
        f"{report.last_epoch_loss:.3f}, held-out accuracy {acc}, "
        f"{report.seconds:.1f} s on {report.device})"
    )


def vae(report: Any) -> str:
    mse = report.holdout_reconstruction_mse
    return (
        f"wrote {report.weights} ({report.train_tiles} training tiles, loss "
        f"{report.first_epoch_loss:.1f} -> {report.last_epoch_loss:.1f}, held-out "
        f"reconstruction MSE {'n/a' if mse is None else f'{mse:.4f}'}, "
        f"{report.seconds:.1f} s on {report.device})"
    )


def deephash(report: Any) -> str:
    st = report.bit_statistics
    return (
        f"wrote {report.weights} ({report.bits} bits on {report.backbone}; loss "
        f"{report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
        f"{st['bit_balance']:.3f}, mean |bit correlation| "
        f"{st['bit_correlation']:.3f}; {report.seconds:.1f} s on {report.device})"
    )


def metric(report: Any) -> str:
    knn = report.holdout_knn_accuracy
    return (
        f"wrote {report.weights} ({report.loss} loss {report.first_loss:.3f} -> "
        f"{report.last_loss:.3f}; held-out 1-NN accuracy "
        f"{'n/a' if knn is None else f'{knn:.3f}'}; {report.seconds:.1f} s)"
    )


def delf(report: Any) -> str:

    def acc(a: float | None) -> str:
        return "n/a" if a is None else f"{a:.3f}"

    return (
        f"wrote {report.weights} ({report.trunk}; held-out accuracy: trunk "
        f"{acc(report.holdout_accuracy_trunk)}, attention "
        f"{acc(report.holdout_accuracy_attention)}; {report.seconds:.1f} s)"
    )


def ssdh(report: Any) -> str:
    st = report.bit_statistics
    return (
        f"wrote {report.weights} ({report.bits} bits{' + ROL' if report.rol else ''}"
        f"; loss {report.first_loss:.2f} -> {report.last_loss:.2f}; bit balance "
        f"{st['bit_balance']:.3f}; {report.seconds:.1f} s)"
    )


def lda(report: Any) -> str:
    acc = "n/a" if report.holdout_accuracy is None else f"{report.holdout_accuracy:.3f}"
    return (
        f"wrote {report.weights} ({report.dim}-d projection of {report.base_recipe}; "
        f"accuracy train {report.train_accuracy:.3f}, held-out {acc}; {report.seconds:.1f} s)"
    )


def scale(report: Any) -> str:
    return (
        f"wrote {report.weights}: {report.train_pairs} training pairs over "
        f"{', '.join(f'{m:g}x' for m in report.magnifications)}; held-out pair "
        f"accuracy {report.held_accuracy:.3f} ({report.held_pairs} pairs, "
        f"{report.seconds:.1f} s on {report.device})"
    )
