"""Which magnifications a query searches: all, one, or the comparator's choice (seed 000)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from cbir.errors import QueryError

if TYPE_CHECKING:
    from cbir.search.collection import Collection

#: Query tiles compared with each magnification's reference tiles.
QUERY_TILES = 4


log = logging.getLogger("cbir")


class ScaleSelector:
    """Resolves `--scale` for an opened bundle; loads the comparator on first use (on
    `device`)."""

    def __init__(self, col: Collection, device: str | None = "auto") -> None:
        self.col = col
        self.device = device
        self._model = None
        self._refs: dict[float, np.ndarray] | None = None
        self._ref_features = None
        self._learned = True  # the comparator's training verdict

    def select(
        self, scale: str, tiles: np.ndarray | Callable[[], np.ndarray]
    ) -> tuple[set[float] | None, dict[str, float] | None]:
        """(magnifications to search or None for all, P(same scale) per magnification).
        `tiles`: the query's (m, n, t, t, 3) tiles, or a function making them (called only
        for "auto", the one choice that looks at them)."""
        mags = self.col.magnifications
        text = scale.strip().lower()
        if text == "all":
            return None, None
        if text == "auto":
            self._comparator()
            if not self._learned:  # a comparator at chance would drop the true scale
                log.warning(
                    "%s: the scale comparator did not learn; --scale auto searches every "
                    "magnification",
                    self.col.bundle.root,
                )
                return None, None
            return self.auto(tiles() if callable(tiles) else tiles)
        try:
            wanted = float(np.float32(float(text.rstrip("x"))))  # as stored (float32)
        except ValueError:
            raise QueryError(
                f"--scale {scale!r}: expected all, auto or a magnification like 20x"
            ) from None
        if wanted not in mags:
            listed = ", ".join(f"{m:g}x" for m in mags)
            raise QueryError(f"--scale {scale}: not indexed in this bundle ({listed})")
        return {wanted}, None

    def auto(self, tiles: np.ndarray) -> tuple[set[float], dict[str, float]]:
        """Compare up to QUERY_TILES query tiles (m, n, t, t, 3) with the reference tiles of
        every magnification; search the most probable one and its neighbours."""
        probs = self.probabilities(tiles)
        mags = self.col.magnifications
        best = max(probs, key=lambda m: (probs[m], -m))
        i = mags.index(best)
        chosen = set(mags[max(0, i - 1) : i + 2])
        return chosen, {f"{m:g}x": round(p, 4) for m, p in sorted(probs.items())}

    def probabilities(self, tiles: np.ndarray) -> dict[float, float]:
        """Mean P(same scale) of the query tiles against each magnification's references."""
        import torch

        from cbir.nn.scale import pair_tensor

        model, device = self._comparator()
        refs = self._references()
        t = tiles.shape[2]
        flat = tiles.reshape(-1, t, t, 3)
        pick = np.unique(np.linspace(0, len(flat) - 1, min(QUERY_TILES, len(flat))).astype(int))
        q = flat[pick]
        out = {}
        with torch.inference_mode():
            if model.arch == "siamese":  # reference features are computed once per index
                fq = model.embed(pair_tensor(q, q, model.input_size)[:, :3].to(device))
                for mag, fr in self._reference_features(model, device).items():
                    fa = fq.repeat_interleave(len(fr), dim=0)
                    fb = fr.repeat(len(fq), 1)
                    out[mag] = float(torch.sigmoid(model.compare(fa, fb)).mean())
                return out
            for mag, ref in refs.items():
                a = np.repeat(q, len(ref), axis=0)
                b = np.tile(ref, (len(q), 1, 1, 1))
                logits = model(pair_tensor(a, b, model.input_size).to(device))
                out[mag] = float(torch.sigmoid(logits).mean())
        return out

    def _reference_features(self, model, device):  # type: ignore[no-untyped-def]
        """{mag: (r, c) features} of the reference tiles, computed on first use."""
        if self._ref_features is None:
            from cbir.nn.scale import pair_tensor

            self._ref_features = {
                mag: model.embed(pair_tensor(ref, ref, model.input_size)[:, :3].to(device))
                for mag, ref in self._references().items()
            }
        return self._ref_features

    def _references(self) -> dict[float, np.ndarray]:
        if self._refs is None:
            indexed = set(self.col.magnifications)
            refs = self.col.bundle.meta.reference_tiles()
            self._refs = {m: r for m, r in refs.items() if m in indexed}
            if not self._refs:
                raise QueryError(
                    f"{self.col.bundle.root}: bundle keeps no reference tiles "
                    "for --scale auto (rebuild it with this cbir)"
                )
        return self._refs

    def _comparator(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            path = self.col.bundle.scale_weights
            if path is None:
                raise QueryError(
                    f"{self.col.bundle.root}: no scale comparator in this bundle "
                    "(build it with --scale-weights from cbir train scale)"
                )
            from cbir.nn.device import resolve_device
            from cbir.nn.scale import ScaleComparator
            from cbir.nn.weights import load_weights

            spec, state = load_weights(path, "scale")
            self._learned = spec.get("verdict", {}).get("learned", True) is not False
            model = ScaleComparator(
                int(spec["width"]),
                input_size=int(spec["input_size"]),
                arch=str(spec.get("arch", "stacked")),
            )
            model.load_state_dict(state)
            device = resolve_device(self.device)
            self._model = (model.to(device).eval(), device)
        return self._model
